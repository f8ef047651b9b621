package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The limits that keep correct clients in while someone leans on the
// server (issue 12): login throttling that cannot lock out correct
// devices, small holes in input checks, uploads.

// blockMQTTFrom fails MQTT logins as id from src until the address is
// blocked, which the event log then says.
func (s *testServer) blockMQTTFrom(src, id string) {
	s.t.Helper()
	for i := 0; i < 8; i++ {
		if c, err := s.tryConnectFrom(src, id, id, "old-secret"); err == nil {
			c.c.Disconnect(0)
			s.t.Fatalf("a wrong secret for %s logged in", id)
		}
	}
	for _, e := range s.events("type=login_refused&limit=100") {
		if strings.Contains(e.Detail, "too many failed logins from "+src) {
			return
		}
	}
	s.t.Fatalf("%s is not blocked after 8 wrong logins", src)
}

// TestMisconfiguredDeviceLocksNoNeighbourOut: twenty devices behind one
// address (a site's NAT) and one neighbour that kept an old secret. After
// a restart, the neighbour's failures block the address; the twenty
// correct devices still connect, all at once, and so does a device that
// never connected from there before.
func TestMisconfiguredDeviceLocksNoNeighbourOut(t *testing.T) {
	const site = "127.0.0.5"
	s := startServer(t, "")
	secrets := map[string]string{}
	for i := range 20 {
		id := fmt.Sprintf("lock%02d", i)
		secrets[id] = s.createDevice(id, "lock")
		s.connectFrom(site, id, id, secrets[id]).c.Disconnect(0)
	}
	s.createDevice("old", "lock") // its secret was changed; it kept the old one
	newcomer := s.createDevice("newcomer", "lock")
	alice := s.createUser("alice", "member")
	dir := s.dir
	s.stop()

	s = startServer(t, dir)
	s.blockMQTTFrom(site, "old")
	var wg sync.WaitGroup
	errs := make(chan error, len(secrets))
	for id, secret := range secrets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.tryConnectFrom(site, id, id, secret)
			if err != nil {
				errs <- fmt.Errorf("%s: %v", id, err)
				return
			}
			c.c.Disconnect(0)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("correct device behind the blocked address refused: %v", err)
	}
	t.Run("NewDeviceFromBlockedAddress", func(t *testing.T) {
		s.connectFrom(site, "newcomer", "newcomer", newcomer).c.Disconnect(0)
	})
	t.Run("PersonStillStrict", func(t *testing.T) {
		// Alice's right token from the blocked address she never used.
		if c, err := s.tryConnectFrom(site, "alice-phone", "alice", alice); err == nil {
			c.c.Disconnect(0)
			t.Error("a person's token from a blocked address she never used logged in")
		}
		if st := s.apiFrom(site, "GET", "/api/v1/devices", alice); st != http.StatusTooManyRequests {
			t.Errorf("alice over REST from the blocked address: %d, want 429", st)
		}
	})
}

// TestPersonKnownAddressAcrossRestart: a person's correct token from an
// address they used before passes that address's block, also after a
// restart; from an address they never used it is refused while blocked.
func TestPersonKnownAddressAcrossRestart(t *testing.T) {
	const home, other = "127.0.0.6", "127.0.0.7"
	s := startServer(t, "")
	alice := s.createUser("alice", "member")
	s.connectFrom(home, "alice-phone", "alice", alice).c.Disconnect(0)
	dir := s.dir
	s.stop()

	s = startServer(t, dir)
	for _, src := range []string{home, other} {
		for i := 0; i < 8; i++ {
			s.apiFrom(src, "GET", "/api/v1/devices", "wrong-token")
		}
	}
	if st := s.apiFrom(home, "GET", "/api/v1/devices", alice); st != http.StatusOK {
		t.Errorf("alice over REST from her blocked home address after a restart: %d, want 200", st)
	}
	s.connectFrom(home, "alice-phone", "alice", alice).c.Disconnect(0)
	if st := s.apiFrom(other, "GET", "/api/v1/devices", alice); st != http.StatusTooManyRequests {
		t.Errorf("alice from a blocked address she never used: %d, want 429", st)
	}
}

// withAuthorization lists devices with a raw Authorization header.
func (s *testServer) withAuthorization(auth string) int {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.url+"/api/v1/devices", nil)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestBearerSchemeCaseInsensitive: RFC 9110 §11.1, the scheme is
// case-insensitive.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	s := startServer(t, "")
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		if st := s.withAuthorization(scheme + " " + testAdminToken); st != http.StatusOK {
			t.Errorf("%q scheme: %d, want 200", scheme, st)
		}
	}
	for _, auth := range []string{"Basic " + testAdminToken, "Bearer", "Bearer ", "Bearer" + testAdminToken} {
		if st := s.withAuthorization(auth); st != http.StatusUnauthorized {
			t.Errorf("%q: %d, want 401", auth, st)
		}
	}
}

// TestGrantDatesRefusedClearly: a grant's from/until is a date or an
// RFC 3339 time; what is neither says so, and 0001-01-01 is no "no limit".
func TestGrantDatesRefusedClearly(t *testing.T) {
	s := startServer(t, "")
	s.createDevice("door", "lock")
	s.createUser("bob", "guest")
	tests := []struct {
		name  string
		body  map[string]any
		want  int
		words string
	}{
		{"UntilYear1", map[string]any{"until": "0001-01-01"}, 400, "the year must be between 2000 and 9999"},
		{"UntilZeroTime", map[string]any{"until": "0001-01-01T00:00:00Z"}, 400, "omit until for no limit"},
		{"NotADate", map[string]any{"from": "24.12.2026"}, 400, "want a date like 2026-12-24 or an RFC 3339 time"},
		{"NegativeHours", map[string]any{"hours": "10:00--1:00"}, 400, "hours must look like"},
		{"PlusHours", map[string]any{"hours": "+9:00-10:00"}, 400, "hours must look like"},
		{"StartAt24", map[string]any{"hours": "24:00-01:00"}, 400, "24:00 is only an end"},
		{"EmptyWeekdays", map[string]any{"weekdays": []string{}}, 400, "weekdays is empty"},
		{"Date", map[string]any{"from": "2026-12-24", "until": "2026-12-27"}, 201, `"from":"2026-12-24T00:00:00Z"`},
		{"RFC3339", map[string]any{"until": "2026-12-27T18:00:00+01:00"}, 201, `"until":"2026-12-27T18:00:00+01:00"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.body["user"], tt.body["device"] = "bob", "door"
			st, body := s.api("POST", "/api/v1/grants", "", tt.body)
			if st != tt.want || !strings.Contains(string(body), tt.words) {
				t.Errorf("%d %s; want %d saying %q", st, body, tt.want, tt.words)
			}
			if strings.Contains(string(body), "2006-01-02T15:04") {
				t.Errorf("the message shows Go's layout: %s", body)
			}
		})
	}
}

// TestPairingCannotTakeAUserName: a device paired under a user's name
// would share that person's MQTT username.
func TestPairingCannotTakeAUserName(t *testing.T) {
	s := startServer(t, "")
	bob := s.createUser("bob", "member")
	code := s.pairingCode(testAdminToken, "lock")
	if c, err := s.tryConnect("bob", "pair", code); err == nil {
		c.c.Disconnect(0)
		t.Error("a pairing login took the user name bob as its device id")
	}
	if st, body := s.api("POST", "/api/v1/users", "", map[string]string{"name": "door", "role": "member"}); st != http.StatusCreated {
		t.Fatalf("create door: %d %s", st, body)
	}
	if st, body := s.api("POST", "/api/v1/devices", "", map[string]string{"id": "door", "kind": "lock", "name": "Door"}); st != http.StatusConflict || !strings.Contains(string(body), "is a user name") {
		t.Errorf("device named like a user: %d %s, want 409", st, body)
	}
	s.createDevice("gate", "lock")
	if st, body := s.api("POST", "/api/v1/users", "", map[string]string{"name": "gate", "role": "member"}); st != http.StatusConflict || !strings.Contains(string(body), "is a device id") {
		t.Errorf("user named like a device: %d %s, want 409", st, body)
	}
	// Bob still logs in as himself, and the code still pairs another id.
	s.connect("bob-phone", "bob", bob).c.Disconnect(0)
	d := s.connect("cellar", "pair", code)
	d.subscribe("todevice/cellar")
	d.publish("toserver", false, "hand_shake lock")
	d.expect("todevice/cellar credentials cellar ")
}

// TestShortAdminTokenOnExistingStoreStarts: a short GATEHOUSE_ADMIN_TOKEN
// left in the environment of a server whose store has users is a warning
// in the log, not a refusal to start.
func TestShortAdminTokenOnExistingStoreStarts(t *testing.T) {
	s := startServer(t, "")
	dir := s.dir
	s.stop()
	var log strings.Builder
	a, err := start(config{Data: dir, MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", CommandTTL: time.Second,
		LogLevel: "warn", AdminToken: "short", Location: time.UTC}, &log)
	if err != nil {
		t.Fatalf("start with a short admin token on a store with users: %v", err)
	}
	a.close()
	if !strings.Contains(log.String(), "GATEHOUSE_ADMIN_TOKEN is shorter than 16 characters") {
		t.Errorf("no warning in the log:\n%s", log.String())
	}
	_, err = start(config{Data: t.TempDir(), MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", CommandTTL: time.Second,
		LogLevel: "error", AdminToken: "short", Location: time.UTC}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "at least 16 characters") {
		t.Errorf("short admin token on a new store: %v, want a refusal", err)
	}
}

// pngHeader is a PNG whose header announces w×h pixels: a few bytes that
// would take w×h×4 bytes to decode.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	chunk("IHDR", append(ihdr, 8, 6, 0, 0, 0))
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

// jpegHeader is a JPEG whose frame header announces w×h pixels.
func jpegHeader(w, h uint16) []byte {
	b := []byte{0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0} // JFIF
	b = append(b, 0xFF, 0xFE, 0x00, 0x12)
	b = append(b, "a gatehouse test"...)
	b = append(b, 0xFF, 0xC0, 0x00, 0x0B, 8, byte(h>>8), byte(h), byte(w>>8), byte(w), 1, 1, 0x11, 0)
	return append(b, 0xFF, 0xD9)
}

// TestPictureDimensionsRefused: a picture whose header announces more than
// 40 megapixels is refused, over HTTP and MQTT, and nothing is stored.
func TestPictureDimensionsRefused(t *testing.T) {
	s := startServer(t, "")
	camSecret := s.createDevice("cam", "camera")
	cam := s.device("cam", camSecret, "camera")
	cases := []struct {
		name, typ string
		body      []byte
		words     string
	}{
		{"PNG", "image/png", pngHeader(100_000, 100_000), "picture is 100000×100000 pixels: at most 40 megapixels"},
		{"JPEG", "image/jpeg", jpegHeader(65_000, 65_000), "picture is 65000×65000 pixels"},
		{"NoPixels", "image/png", pngHeader(0, 10), "not a complete PNG"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body := s.upload("/api/v1/strangers", "cam", camSecret, tc.typ, tc.body)
			if st != http.StatusBadRequest || !strings.Contains(string(body), `"code":"invalid"`) || !strings.Contains(string(body), tc.words) {
				t.Errorf("upload: %d %s; want 400 saying %q", st, body, tc.words)
			}
			cam.publish("toserver", false, append([]byte("find_stranger "), tc.body...))
			if got := cam.expect("todevice/cam error "); !strings.Contains(got, tc.words) {
				t.Errorf("MQTT: %q; want it to say %q", got, tc.words)
			}
		})
	}
	// Within the limit: taken.
	if st, body := s.upload("/api/v1/strangers", "cam", camSecret, "image/png", pngHeader(8000, 5000)); st != http.StatusCreated {
		t.Errorf("40 megapixels exactly: %d %s", st, body)
	}
	if n := s.strangerCount(); n != 1 {
		t.Errorf("%d pictures stored, want 1", n)
	}
}

// TestPictureTypeMustMatchItsBytes: a Content-Type that names a picture
// type the bytes are not is refused (415); none, or a generic one, is fine.
func TestPictureTypeMustMatchItsBytes(t *testing.T) {
	s := startServer(t, "")
	camSecret := s.createDevice("cam", "camera")
	png := testImage(t, "png", 1)
	st, body := s.upload("/api/v1/strangers", "cam", camSecret, "image/jpeg", png)
	if st != http.StatusUnsupportedMediaType || !strings.Contains(string(body), "the body is image/png, not image/jpeg") {
		t.Errorf("PNG sent as JPEG: %d %s, want 415", st, body)
	}
	for _, ct := range []string{"image/png", "application/octet-stream", "IMAGE/PNG"} {
		if st, body := s.upload("/api/v1/strangers", "cam", camSecret, ct, png); st != http.StatusCreated {
			t.Errorf("PNG sent as %s: %d %s", ct, st, body)
		}
	}
}

// rawUpload sends an upload's headers and the first part of its body on a
// raw connection, then waits (without closing) for the answer.
func (s *testServer) rawUpload(secret string, length int, first []byte) (status int, body string) {
	s.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	auth := base64.StdEncoding.EncodeToString([]byte("cam:" + secret))
	fmt.Fprintf(conn, "POST /api/v1/strangers HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n", auth, length)
	conn.Write(first)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		s.t.Fatalf("no answer to the upload: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestUploadBounded: an upload that announces more than the cap is refused
// before its body is read; one whose body does not come is answered 408
// once the upload timeout has passed, not held for the server's.
func TestUploadBounded(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.uploadTimeout = 300 * time.Millisecond })
	camSecret := s.createDevice("cam", "camera")
	t.Run("DeclaredTooLarge", func(t *testing.T) {
		// 1 GiB announced, nothing sent: the answer comes without it.
		st, body := s.rawUpload(camSecret, 1<<30, nil)
		if st != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"code":"too_large"`) {
			t.Errorf("%d %s, want 413", st, body)
		}
	})
	t.Run("SlowBody", func(t *testing.T) {
		start := time.Now()
		st, body := s.rawUpload(camSecret, 4096, pngHeader(10, 10)[:20])
		if st != http.StatusRequestTimeout || !strings.Contains(body, `"code":"timeout"`) || !strings.Contains(body, "picture not sent within 300ms") {
			t.Errorf("%d %s, want 408", st, body)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("answered after %s, before the upload timeout", d)
		}
	})
	if n := s.strangerCount(); n != 0 {
		t.Errorf("%d pictures stored", n)
	}
}

// TestPictureRangesLimited: a few ranges are served as asked; more than
// four get the whole picture, so that tiny ranges cannot make a response
// many times the picture's size.
func TestPictureRangesLimited(t *testing.T) {
	s := startServer(t, "")
	camSecret := s.createDevice("cam", "camera")
	pic := testImage(t, "png", 7)
	st, body := s.upload("/api/v1/strangers", "cam", camSecret, "image/png", pic)
	if st != http.StatusCreated {
		t.Fatalf("upload: %d %s", st, body)
	}
	link := jsonField(t, body, "url")
	resp, got := s.get(link, "Range", "bytes=0-0,2-2")
	if resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") {
		t.Errorf("two ranges: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	many := "bytes=0-0" + strings.Repeat(",2-2,4-4", 200)
	resp, got = s.get(link, "Range", many)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, pic) {
		t.Errorf("401 ranges: %d, %d bytes; want 200 with the picture (%d bytes)", resp.StatusCode, len(got), len(pic))
	}
	resp, _ = s.get(link, "Range", "bytes=0-0,1-1,2-2,3-3")
	if resp.StatusCode != http.StatusPartialContent {
		t.Errorf("four ranges: %d, want 206", resp.StatusCode)
	}
}
