package harness

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Sample is one measurement of one run: the comparison tools collect
// samples from interleaved runs and Table prints their medians.
type Sample struct {
	// Case says what was measured and at what size, e.g. "report
	// throughput, 100 devices, QoS 1, one in flight".
	Case string
	// Metric is the quantity and its unit, e.g. "reports/s" or "p99 ms".
	Metric string
	// Server is the column: "gatehouse", "gatehouse before", "mochi",
	// "mosquitto".
	Server string
	Value  float64
}

// Table writes samples as a markdown table: a row per case and metric in
// the order they first appear, a column per server in the order given
// (servers without a sample for a row show "–"), each cell the median of
// its samples with their count, and a last column with the ratio of the
// first server's median to the floor's (the server named floor; no ratio
// column when floor is "").
func Table(w io.Writer, samples []Sample, servers []string, floor string) error {
	type key struct{ c, m string }
	var rows []key
	cells := map[key]map[string][]float64{}
	for _, s := range samples {
		k := key{s.Case, s.Metric}
		if cells[k] == nil {
			cells[k] = map[string][]float64{}
			rows = append(rows, k)
		}
		cells[k][s.Server] = append(cells[k][s.Server], s.Value)
	}
	head := append([]string{"what", "metric"}, servers...)
	if floor != "" && len(servers) > 0 {
		head = append(head, servers[0]+" / "+floor)
	}
	var b strings.Builder
	b.WriteString("| " + strings.Join(head, " | ") + " |\n")
	b.WriteString(strings.Repeat("| --- ", len(head)) + "|\n")
	for _, k := range rows {
		line := []string{k.c, k.m}
		for _, srv := range servers {
			v := cells[k][srv]
			if len(v) == 0 {
				line = append(line, "–")
				continue
			}
			line = append(line, fmt.Sprintf("%s (n=%d)", Num(Median(v)), len(v)))
		}
		if floor != "" && len(servers) > 0 {
			a, f := cells[k][servers[0]], cells[k][floor]
			r := "–"
			if len(a) > 0 && len(f) > 0 && Median(f) != 0 {
				r = Num(Median(a)/Median(f)) + "×"
			}
			line = append(line, r)
		}
		b.WriteString("| " + strings.Join(line, " | ") + " |\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Median is the median of v (the mean of the middle two for an even
// count); 0 for none.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Num prints v with three significant figures, without an exponent.
func Num(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}
