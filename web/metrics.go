package web

import (
	"net/http"
	"sort"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gatehouse/actions"
)

// Metrics is the server's Prometheus registry (its own, not the global
// one): the counters and histograms the service and the store feed as
// things happen (it implements actions.Metrics; ObserveCommit is the
// store's), and the values read at each scrape from MetricsSources.
// docs/monitoring.md lists every series.
type Metrics struct {
	reg       *prometheus.Registry
	commands  *prometheus.CounterVec
	roundTrip *prometheus.HistogramVec
	events    *prometheus.CounterVec
	refused   *prometheus.CounterVec
	scripts   *prometheus.CounterVec
	commitDur prometheus.Histogram
	commitN   prometheus.Histogram
}

var _ actions.Metrics = (*Metrics)(nil)

// MetricsSources are the values read at each scrape; nil ones are left out.
type MetricsSources struct {
	// Devices counts the devices known and online, by kind.
	Devices func() (map[string]actions.DeviceCount, error)
	// Streams is the number of live event streams (SSE).
	Streams func() int
	// MQTT is the live logged-in connections and the messages received
	// from clients and sent to them since start.
	MQTT func() (connections int, in, out uint64)
	// DataFileBytes is the size of the data file.
	DataFileBytes func() (int64, error)
}

// NewMetrics makes the registry with the Go and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_commands_total",
			Help: "Commands that reached their final status (done, failed, expired), by verb.",
		}, []string{"verb", "status"}),
		roundTrip: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_command_round_trip_seconds",
			Help:    "Time from a command sent to its device's answer (done or failed), by verb.",
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"verb"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_events_total",
			Help: "Events committed to the log, by type.",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_logins_refused_total",
			Help: "Refused logins, by way (rest, mqtt) and reason.",
		}, []string{"via", "reason"}),
		scripts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_script_runs_total",
			Help: "Script runs, by result (ok, error, stopped by a limit).",
		}, []string{"result"}),
		commitDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatehouse_store_commit_seconds",
			Help:    "Time of each successful commit of the data file, fsync included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		commitN: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatehouse_store_commit_writes",
			Help:    "Writes grouped into each successful commit of the data file.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
	}
	// The label values that exist from the start, so that rate() and
	// alerts see a zero before the first one.
	for _, verb := range []string{"lock", "unlock", "on", "off"} {
		for _, status := range []string{actions.StatusDone, actions.StatusFailed, actions.StatusExpired} {
			m.commands.WithLabelValues(verb, status)
		}
	}
	for _, via := range []string{actions.ViaREST, actions.ViaMQTT} {
		for _, reason := range actions.RefusalReasons {
			m.refused.WithLabelValues(via, reason)
		}
	}
	m.reg.MustRegister(m.commands, m.roundTrip, m.events, m.refused, m.scripts, m.commitDur, m.commitN,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// CommandFinished implements actions.Metrics.
func (m *Metrics) CommandFinished(verb, status string, answered time.Duration) {
	m.commands.WithLabelValues(verb, status).Inc()
	if answered > 0 {
		m.roundTrip.WithLabelValues(verb).Observe(answered.Seconds())
	}
}

// EventWritten implements actions.Metrics.
func (m *Metrics) EventWritten(typ string) { m.events.WithLabelValues(typ).Inc() }

// LoginRefused implements actions.Metrics.
func (m *Metrics) LoginRefused(via, reason string) { m.refused.WithLabelValues(via, reason).Inc() }

// ScriptRun implements actions.Metrics.
func (m *Metrics) ScriptRun(result string) { m.scripts.WithLabelValues(result).Inc() }

// ObserveCommit records one commit of the store: store.Options.OnCommit.
func (m *Metrics) ObserveCommit(took time.Duration, writes int) {
	m.commitDur.Observe(took.Seconds())
	m.commitN.Observe(float64(writes))
}

// Watch adds the values read at each scrape.
func (m *Metrics) Watch(src MetricsSources) {
	m.reg.MustRegister(&scrapeCollector{src: src})
}

// Handler serves the registry in Prometheus' text format (or
// OpenMetrics when asked for it), with no authentication of its own.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

var (
	descDevices = prometheus.NewDesc("gatehouse_devices",
		"Devices the server knows, by kind.", []string{"kind"}, nil)
	descOnline = prometheus.NewDesc("gatehouse_devices_online",
		"Devices with a live MQTT connection, by kind.", []string{"kind"}, nil)
	descConns = prometheus.NewDesc("gatehouse_mqtt_connections",
		"Live logged-in MQTT connections (devices and people).", nil, nil)
	descMessages = prometheus.NewDesc("gatehouse_mqtt_messages_total",
		"MQTT messages received from clients (in) and written to them (out).", []string{"direction"}, nil)
	descStreams = prometheus.NewDesc("gatehouse_event_streams",
		"Live event streams (Server-Sent Events).", nil, nil)
	descFile = prometheus.NewDesc("gatehouse_data_file_bytes",
		"Size of the data file (gatehouse.db).", nil, nil)
)

// scrapeCollector reads MetricsSources at each scrape.
type scrapeCollector struct{ src MetricsSources }

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDevices, descOnline, descConns, descMessages, descStreams, descFile} {
		ch <- d
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Devices != nil {
		if counts, err := c.src.Devices(); err != nil {
			ch <- prometheus.NewInvalidMetric(descDevices, err)
		} else {
			kinds := make([]string, 0, len(counts))
			for k := range counts {
				kinds = append(kinds, k)
			}
			sort.Strings(kinds)
			for _, k := range kinds {
				ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(counts[k].Known), k)
				ch <- prometheus.MustNewConstMetric(descOnline, prometheus.GaugeValue, float64(counts[k].Online), k)
			}
		}
	}
	if c.src.MQTT != nil {
		conns, in, out := c.src.MQTT()
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(conns))
		ch <- prometheus.MustNewConstMetric(descMessages, prometheus.CounterValue, float64(in), "in")
		ch <- prometheus.MustNewConstMetric(descMessages, prometheus.CounterValue, float64(out), "out")
	}
	if c.src.Streams != nil {
		ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(c.src.Streams()))
	}
	if c.src.DataFileBytes != nil {
		if n, err := c.src.DataFileBytes(); err != nil {
			ch <- prometheus.NewInvalidMetric(descFile, err)
		} else {
			ch <- prometheus.MustNewConstMetric(descFile, prometheus.GaugeValue, float64(n))
		}
	}
}

// handleMetrics serves /metrics to an admin (the route authenticates).
func (s *server) handleMetrics(c echo.Context) error {
	if !principal(c).IsAdmin() {
		return actions.Errorf(actions.EForbidden, "only admins read metrics")
	}
	s.metrics.ServeHTTP(c.Response(), c.Request())
	return nil
}
