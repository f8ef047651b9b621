package web

import (
	"bytes"
	"strings"
	"testing"
)

// The vectors are the worked example of the QR specification as taught
// everywhere (Thonky's QR tutorial): "HELLO WORLD" at 1-M.
func TestQRHelloWorldCodewords(t *testing.T) {
	want := []byte{32, 91, 11, 120, 209, 114, 220, 77, 67, 64, 236, 17, 236, 17, 236, 17}
	q, err := qrEncode("HELLO WORLD")
	if err != nil {
		t.Fatal(err)
	}
	if q.size != 21 {
		t.Fatalf("size %d, want 21 (version 1)", q.size)
	}
	// Read the codewords back out of the symbol, unmasked with the mask
	// its format information names.
	mask := -1
	var format int
	for i := 0; i <= 5; i++ {
		format |= b2i(q.modules[i][8]) << i
	}
	format |= b2i(q.modules[7][8])<<6 | b2i(q.modules[8][8])<<7 | b2i(q.modules[8][7])<<8
	for i := 9; i < 15; i++ {
		format |= b2i(q.modules[8][14-i]) << i
	}
	for m := 0; m < 8; m++ {
		if qrFormatBits(m) == format {
			mask = m
		}
	}
	if mask < 0 {
		t.Fatalf("format bits %015b name no mask of level M", format)
	}
	q.flip(mask)
	got := readCodewords(q, 26)
	if !bytes.Equal(got[:16], want) {
		t.Errorf("data codewords %v, want %v", got[:16], want)
	}
	if ec := []byte{196, 35, 39, 119, 235, 215, 231, 226, 93, 23}; !bytes.Equal(got[16:], ec) {
		t.Errorf("error correction %v, want %v", got[16:], ec)
	}
}

func TestQRFormatBits(t *testing.T) {
	// Level M, masks 0, 5 and 7, from the specification's table.
	for mask, want := range map[int]int{0: 0b101010000010010, 5: 0b100000011001110, 7: 0b100101010100000} {
		if got := qrFormatBits(mask); got != want {
			t.Errorf("mask %d: %015b, want %015b", mask, got, want)
		}
	}
}

func TestQRReedSolomon(t *testing.T) {
	// Any codeword of a Reed-Solomon code, read as a polynomial, has the
	// generator's roots α^0 … α^(n-1) as roots.
	data := []byte("K7QM-3XWA pairing code")
	ec := reedSolomon(data, 16)
	word := append(append([]byte{}, data...), ec...)
	root := byte(1)
	for i := 0; i < 16; i++ {
		var v byte
		for _, c := range word {
			v = gfMul(v, root) ^ c
		}
		if v != 0 {
			t.Errorf("α^%d is not a root: %d", i, v)
		}
		root = gfMul(root, 2)
	}
}

func TestQRSizes(t *testing.T) {
	for _, tc := range []struct {
		text string
		size int
	}{{"K7QM-3XWA", 21}, {"pair me: k7qm-3xwa", 25}, {strings.Repeat("x", 100), 41}} {
		q, err := qrEncode(tc.text)
		if err != nil {
			t.Fatalf("%q: %v", tc.text, err)
		}
		if q.size != tc.size {
			t.Errorf("%q: size %d, want %d", tc.text, q.size, tc.size)
		}
		if s := q.svg(); !strings.HasPrefix(s, "<svg") || !strings.Contains(s, "M4 4h1v1h-1z") {
			t.Errorf("%q: svg without the finder's corner: %.80s", tc.text, s)
		}
	}
	if _, err := qrEncode(strings.Repeat("x", 200)); err == nil {
		t.Error("200 bytes: no error")
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readCodewords reads n codewords in placement order.
func readCodewords(q *qrCode, n int) []byte {
	out := make([]byte, n)
	i := 0
	for right := q.size - 1; right >= 1; right -= 2 {
		if right == 6 {
			right = 5
		}
		for vert := 0; vert < q.size; vert++ {
			for j := 0; j < 2; j++ {
				x, y := right-j, vert
				if (right+1)&2 == 0 {
					y = q.size - 1 - vert
				}
				if !q.fixed[y][x] && i < n*8 {
					if q.modules[y][x] {
						out[i/8] |= 0x80 >> (i % 8)
					}
					i++
				}
			}
		}
	}
	return out
}
