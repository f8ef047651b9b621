package web

import (
	"fmt"
	"html/template"
	"strings"

	"gatehouse/actions"
)

// A small QR code encoder (ISO/IEC 18004) for the dashboard's pairing
// codes: error correction level M, versions 1 to 6 (up to 106 bytes),
// alphanumeric or byte mode. It is written here rather than imported
// because web may depend only on Echo (STYLE.md) and a pairing code needs
// only the smallest symbols. The layout follows the standard and Project
// Nayuki's reference description.

// qrVersion is the block structure of one version at level M.
type qrVersion struct {
	blocks, dataPerBlock, ecPerBlock int
}

var qrVersions = []qrVersion{
	1: {1, 16, 10}, 2: {1, 28, 16}, 3: {1, 44, 26}, 4: {2, 32, 18}, 5: {2, 43, 24}, 6: {4, 27, 16},
}

const qrAlnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

// qrCode is a square of modules, true for dark.
type qrCode struct {
	size    int
	modules [][]bool
	fixed   [][]bool // function patterns, which masks leave alone
}

type bitBuffer []bool

func (b *bitBuffer) put(v, n int) {
	for i := n - 1; i >= 0; i-- {
		*b = append(*b, v>>i&1 == 1)
	}
}

// qrEncode makes the QR code of text.
func qrEncode(text string) (*qrCode, error) {
	alnum := !strings.ContainsFunc(text, func(r rune) bool { return !strings.ContainsRune(qrAlnum, r) })
	var bits bitBuffer
	if alnum {
		bits.put(0b0010, 4)
		bits.put(len(text), 9)
		for i := 0; i < len(text); i += 2 {
			if i+1 < len(text) {
				bits.put(strings.IndexByte(qrAlnum, text[i])*45+strings.IndexByte(qrAlnum, text[i+1]), 11)
			} else {
				bits.put(strings.IndexByte(qrAlnum, text[i]), 6)
			}
		}
	} else {
		bits.put(0b0100, 4)
		bits.put(len(text), 8)
		for i := 0; i < len(text); i++ {
			bits.put(int(text[i]), 8)
		}
	}
	ver := 0
	for v := 1; v < len(qrVersions); v++ {
		if len(bits) <= qrVersions[v].blocks*qrVersions[v].dataPerBlock*8 {
			ver = v
			break
		}
	}
	if ver == 0 {
		return nil, actions.Errorf(actions.EInvalid, "text too long for a QR code")
	}
	vi := qrVersions[ver]
	capacity := vi.blocks * vi.dataPerBlock * 8
	bits.put(0, min(4, capacity-len(bits)))
	bits.put(0, (8-len(bits)%8)%8)
	for pad := 0xEC; len(bits) < capacity; pad ^= 0xEC ^ 0x11 {
		bits.put(pad, 8)
	}
	data := make([]byte, len(bits)/8)
	for i, b := range bits {
		if b {
			data[i/8] |= 0x80 >> (i % 8)
		}
	}
	q := newQR(ver)
	q.placeData(qrInterleave(data, vi))
	q.applyBestMask()
	return q, nil
}

// qrInterleave splits data into blocks, adds each block's error
// correction and interleaves them as the standard orders codewords.
func qrInterleave(data []byte, vi qrVersion) []byte {
	var blocks, ecs [][]byte
	for i := 0; i < vi.blocks; i++ {
		b := data[i*vi.dataPerBlock : (i+1)*vi.dataPerBlock]
		blocks = append(blocks, b)
		ecs = append(ecs, reedSolomon(b, vi.ecPerBlock))
	}
	var out []byte
	for i := 0; i < vi.dataPerBlock; i++ {
		for _, b := range blocks {
			out = append(out, b[i])
		}
	}
	for i := 0; i < vi.ecPerBlock; i++ {
		for _, e := range ecs {
			out = append(out, e[i])
		}
	}
	return out
}

// gfMul multiplies in GF(256) with the QR polynomial 0x11D.
func gfMul(x, y byte) byte {
	var z byte
	for i := 7; i >= 0; i-- {
		z = z<<1 ^ (z>>7)*0x1D
		z ^= (y >> i & 1) * x
	}
	return z
}

// reedSolomon returns the n error correction codewords of data.
func reedSolomon(data []byte, n int) []byte {
	// The generator (x - α^0)(x - α^1)…(x - α^(n-1)), leading 1 left out.
	gen := make([]byte, n)
	gen[n-1] = 1
	root := byte(1)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			gen[j] = gfMul(gen[j], root)
			if j+1 < n {
				gen[j] ^= gen[j+1]
			}
		}
		root = gfMul(root, 2)
	}
	rem := make([]byte, n)
	for _, b := range data {
		f := b ^ rem[0]
		copy(rem, rem[1:])
		rem[n-1] = 0
		for j := range rem {
			rem[j] ^= gfMul(gen[j], f)
		}
	}
	return rem
}

func newQR(ver int) *qrCode {
	size := 17 + 4*ver
	q := &qrCode{size: size, modules: make([][]bool, size), fixed: make([][]bool, size)}
	for i := range q.modules {
		q.modules[i] = make([]bool, size)
		q.fixed[i] = make([]bool, size)
	}
	for i := 0; i < size; i++ {
		q.set(6, i, i%2 == 0)
		q.set(i, 6, i%2 == 0)
	}
	for _, c := range [][2]int{{3, 3}, {size - 4, 3}, {3, size - 4}} {
		for dy := -4; dy <= 4; dy++ {
			for dx := -4; dx <= 4; dx++ {
				x, y := c[0]+dx, c[1]+dy
				if x >= 0 && x < size && y >= 0 && y < size {
					dist := max(abs(dx), abs(dy))
					q.set(x, y, dist != 2 && dist != 4)
				}
			}
		}
	}
	if ver >= 2 {
		c := 4*ver + 10
		for dy := -2; dy <= 2; dy++ {
			for dx := -2; dx <= 2; dx++ {
				q.set(c+dx, c+dy, max(abs(dx), abs(dy)) != 1)
			}
		}
	}
	q.drawFormat(0) // reserves the format areas and the dark module
	return q
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// set draws a function module at column x, row y.
func (q *qrCode) set(x, y int, dark bool) {
	q.modules[y][x] = dark
	q.fixed[y][x] = true
}

// qrFormatBits is the 15-bit format information for level M and mask.
func qrFormatBits(mask int) int {
	data := 0b00<<3 | mask // level M is 00
	rem := data
	for i := 0; i < 10; i++ {
		rem = rem<<1 ^ (rem>>9)*0x537
	}
	return (data<<10 | rem) ^ 0x5412
}

func (q *qrCode) drawFormat(mask int) {
	bits := qrFormatBits(mask)
	bit := func(i int) bool { return bits>>i&1 == 1 }
	for i := 0; i <= 5; i++ {
		q.set(8, i, bit(i))
	}
	q.set(8, 7, bit(6))
	q.set(8, 8, bit(7))
	q.set(7, 8, bit(8))
	for i := 9; i < 15; i++ {
		q.set(14-i, 8, bit(i))
	}
	for i := 0; i < 8; i++ {
		q.set(q.size-1-i, 8, bit(i))
	}
	for i := 8; i < 15; i++ {
		q.set(8, q.size-15+i, bit(i))
	}
	q.set(8, q.size-8, true)
}

// placeData lays the codewords in the zigzag of two-module columns, from
// the bottom right, skipping the timing column.
func (q *qrCode) placeData(codewords []byte) {
	i := 0
	for right := q.size - 1; right >= 1; right -= 2 {
		if right == 6 {
			right = 5
		}
		for vert := 0; vert < q.size; vert++ {
			for j := 0; j < 2; j++ {
				x := right - j
				y := vert
				if (right+1)&2 == 0 {
					y = q.size - 1 - vert
				}
				if !q.fixed[y][x] && i < len(codewords)*8 {
					q.modules[y][x] = codewords[i/8]>>(7-i%8)&1 == 1
					i++
				}
			}
		}
	}
}

func qrMask(mask, x, y int) bool {
	switch mask {
	case 0:
		return (x+y)%2 == 0
	case 1:
		return y%2 == 0
	case 2:
		return x%3 == 0
	case 3:
		return (x+y)%3 == 0
	case 4:
		return (x/3+y/2)%2 == 0
	case 5:
		return x*y%2+x*y%3 == 0
	case 6:
		return (x*y%2+x*y%3)%2 == 0
	default:
		return ((x+y)%2+x*y%3)%2 == 0
	}
}

func (q *qrCode) flip(mask int) {
	for y := 0; y < q.size; y++ {
		for x := 0; x < q.size; x++ {
			if !q.fixed[y][x] && qrMask(mask, x, y) {
				q.modules[y][x] = !q.modules[y][x]
			}
		}
	}
}

// applyBestMask tries the eight masks and keeps the one with the lowest
// penalty, as the standard asks.
func (q *qrCode) applyBestMask() {
	best, bestScore := 0, -1
	for m := 0; m < 8; m++ {
		q.flip(m)
		q.drawFormat(m)
		if score := q.penalty(); bestScore < 0 || score < bestScore {
			best, bestScore = m, score
		}
		q.flip(m)
	}
	q.flip(best)
	q.drawFormat(best)
}

// penalty scores the symbol by the standard's four rules.
func (q *qrCode) penalty() int {
	n, score, dark := q.size, 0, 0
	at := func(x, y int, col bool) bool {
		if col {
			return q.modules[x][y]
		}
		return q.modules[y][x]
	}
	for _, col := range []bool{false, true} {
		for y := 0; y < n; y++ {
			run := 1
			var line []bool
			for x := 0; x < n; x++ {
				line = append(line, at(x, y, col))
				if x > 0 && at(x, y, col) == at(x-1, y, col) {
					run++
					if run == 5 {
						score += 3
					} else if run > 5 {
						score++
					}
				} else if x > 0 {
					run = 1
				}
			}
			score += 40 * finderLike(line)
		}
	}
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			if q.modules[y][x] {
				dark++
			}
			if x+1 < n && y+1 < n {
				c := q.modules[y][x]
				if c == q.modules[y][x+1] && c == q.modules[y+1][x] && c == q.modules[y+1][x+1] {
					score += 3
				}
			}
		}
	}
	pct := dark * 100 / (n * n)
	return score + 10*(abs(pct-50)/5)
}

// finderLike counts 1:1:3:1:1 patterns with four light modules on one side.
func finderLike(line []bool) int {
	pat := []bool{true, false, true, true, true, false, true}
	count := 0
	for i := 0; i+7 <= len(line); i++ {
		ok := true
		for j, p := range pat {
			if line[i+j] != p {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		light := func(from, to int) bool {
			for k := from; k < to; k++ {
				if k >= 0 && k < len(line) && line[k] {
					return false
				}
			}
			return true
		}
		if light(i-4, i) || light(i+7, i+11) {
			count++
		}
	}
	return count
}

// svg draws the code with a quiet zone of four modules.
func (q *qrCode) svg() string {
	n := q.size + 8
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" class="qr" role="img" aria-label="QR code" shape-rendering="crispEdges"><rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n, n, n)
	for y := 0; y < q.size; y++ {
		for x := 0; x < q.size; x++ {
			if q.modules[y][x] {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x+4, y+4)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String()
}

// qrSVG is the QR code of text as inline SVG.
func qrSVG(text string) (template.HTML, error) {
	q, err := qrEncode(text)
	if err != nil {
		return "", err
	}
	return template.HTML(q.svg()), nil // built from numbers only
}
