package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testImage(t *testing.T, format string, shade uint8) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for x := 0; x < 64; x++ {
		for y := 0; y < 48; y++ {
			img.Set(x, y, color.RGBA{shade, uint8(x * 4), uint8(y * 5), 255})
		}
	}
	var b bytes.Buffer
	var err error
	if format == "jpeg" {
		err = jpeg.Encode(&b, img, nil)
	} else {
		err = png.Encode(&b, img)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// upload posts a picture as a device with HTTP Basic.
func (s *testServer) upload(path, id, secret, contentType string, body []byte) (int, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest("POST", s.url+path, bytes.NewReader(body))
	req.SetBasicAuth(id, secret)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// get fetches a path without any credentials, with extra headers.
func (s *testServer) get(path string, headers ...string) (*http.Response, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.url+path, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (s *testServer) strangerCount() int {
	var l struct{ Items []json.RawMessage }
	s.apiJSON("GET", "/api/v1/strangers?limit=1000", nil, http.StatusOK, &l)
	return len(l.Items)
}

func TestStrangerPictures(t *testing.T) {
	clk := newClock(time.Now().UTC().Truncate(time.Second))
	dir := t.TempDir()
	s := startServerWith(t, dir, func(c *config) { c.now = clk.now; c.KeepPictures = 4 })
	camSecret := s.createDevice("cam", "camera")
	lockSecret := s.createDevice("door", "lock")
	cam := s.device("cam", camSecret, "camera")
	phone := s.appClient("phone")
	jpg := testImage(t, "jpeg", 10)
	var link, firstID string

	t.Run("MQTT", func(t *testing.T) {
		cam.publish("toserver", false, append([]byte("find_stranger 1795918000 "), jpg...))
		firstID = strings.Fields(cam.expect("todevice/cam stranger_saved "))[2]
		f := strings.Fields(phone.expect("toapp/admin find_stranger cam " + firstID + " "))
		link = f[4]
		resp, body := s.get(link)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, jpg) {
			t.Fatalf("signed link: %d, %d bytes (want %d)", resp.StatusCode, len(body), len(jpg))
		}
		h := resp.Header
		if h.Get("Content-Type") != "image/jpeg" || h.Get("ETag") == "" || !strings.Contains(h.Get("Cache-Control"), "immutable") || h.Get("Content-Length") != itoa(len(jpg)) {
			t.Errorf("headers %v", h)
		}
		if resp, body := s.get(link, "Range", "bytes=0-9"); resp.StatusCode != http.StatusPartialContent || len(body) != 10 {
			t.Errorf("range: %d, %d bytes", resp.StatusCode, len(body))
		}
		if resp, _ := s.get(link, "If-None-Match", h.Get("ETag")); resp.StatusCode != http.StatusNotModified {
			t.Errorf("If-None-Match: %d", resp.StatusCode)
		}
	})
	t.Run("HTTP", func(t *testing.T) {
		pic := testImage(t, "png", 20)
		st, body := s.upload("/api/v1/strangers", "cam", camSecret, "image/png", pic)
		if st != http.StatusCreated || !strings.Contains(string(body), `"type":"image/png"`) {
			t.Fatalf("upload: %d %s", st, body)
		}
		phone.expect("toapp/admin find_stranger cam " + jsonField(t, body, "id"))
		// The prototype's multipart upload; the client's file name is ignored.
		var mp bytes.Buffer
		w := multipart.NewWriter(&mp)
		fw, _ := w.CreateFormFile("file", "../../etc/passwd")
		latest := testImage(t, "png", 30)
		fw.Write(latest)
		w.Close()
		st, body = s.upload("/upload", "cam", camSecret, w.FormDataContentType(), mp.Bytes())
		if st != http.StatusCreated {
			t.Fatalf("multipart upload: %d %s", st, body)
		}
		_, got := s.api("GET", "/get_pic", "", nil)
		if !bytes.Equal(got, latest) {
			t.Errorf("/get_pic is not the latest picture (%d bytes)", len(got))
		}
	})
	t.Run("Refused", func(t *testing.T) {
		before := s.strangerCount()
		truncated := jpg[:len(jpg)/2]
		cases := []struct {
			name, id, secret string
			body             []byte
			want             int
		}{
			{"NotACamera", "door", lockSecret, jpg, http.StatusForbidden},
			{"WrongSecret", "cam", "nope", jpg, http.StatusUnauthorized},
			{"Text", "cam", camSecret, []byte(strings.Repeat("hello ", 20)), http.StatusBadRequest},
			{"TruncatedJPEG", "cam", camSecret, truncated, http.StatusBadRequest},
			{"TooLarge", "cam", camSecret, append(append([]byte{}, jpg...), make([]byte, 20<<20)...), http.StatusRequestEntityTooLarge},
		}
		for _, tc := range cases {
			if st, body := s.upload("/api/v1/strangers", tc.id, tc.secret, "image/jpeg", tc.body); st != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, st, body, tc.want)
			}
		}
		for _, path := range []string{"/api/v1/strangers/..%2F..%2Fetc%2Fpasswd/picture", "/api/v1/strangers/../../etc/passwd/picture", "/api/v1/strangers/0000/picture"} {
			if st, body := s.api("GET", path, "", nil); st != http.StatusNotFound {
				t.Errorf("GET %s: %d %s", path, st, body)
			}
		}
		door := s.device("door", lockSecret, "lock")
		door.publish("toserver", false, append([]byte("find_stranger "), jpg...))
		door.expect("todevice/door error only cameras send pictures")
		cam.publish("toserver", false, append([]byte("find_stranger "), truncated...))
		cam.expect("todevice/cam error picture is not a complete JPEG")
		if after := s.strangerCount(); after != before {
			t.Errorf("refused pictures were stored: %d → %d", before, after)
		}
	})
	t.Run("Links", func(t *testing.T) {
		tampered := link[:len(link)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", link[len(link)-1])+1)%16])
		if resp, _ := s.get(tampered); resp.StatusCode != http.StatusForbidden {
			t.Errorf("tampered signature: %d", resp.StatusCode)
		}
		if resp, _ := s.get(strings.Replace(link, "exp=", "exp=9", 1)); resp.StatusCode != http.StatusForbidden {
			t.Errorf("changed expiry: %d", resp.StatusCode)
		}
		if resp, _ := s.get(strings.SplitN(link, "?", 2)[0]); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("no signature, no bearer: %d", resp.StatusCode)
		}
		clk.add(16 * time.Minute)
		if resp, _ := s.get(link); resp.StatusCode != http.StatusForbidden {
			t.Errorf("expired link: %d", resp.StatusCode)
		}
		clk.add(-16 * time.Minute)
	})
	t.Run("Access", func(t *testing.T) {
		bob := s.createUser("bob", "member")
		if st, body := s.as(bob, "GET", "/api/v1/strangers", nil); st != http.StatusOK || strings.Contains(body, `"device"`) {
			t.Errorf("bob lists pictures: %d %s", st, body)
		}
		if st, _ := s.as(bob, "GET", "/api/v1/strangers/"+firstID+"/picture", nil); st != http.StatusNotFound {
			t.Errorf("bob fetches a picture: %d", st)
		}
		if st, _ := s.as(bob, "GET", "/get_pic", nil); st != http.StatusNotFound {
			t.Errorf("bob /get_pic: %d", st)
		}
	})
	t.Run("Retention", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			if st, body := s.upload("/api/v1/strangers", "cam", camSecret, "image/jpeg", testImage(t, "jpeg", uint8(100+i))); st != http.StatusCreated {
				t.Fatalf("upload %d: %d %s", i, st, body)
			}
		}
		if n := s.strangerCount(); n != 4 {
			t.Errorf("%d pictures kept, want 4", n)
		}
		if resp, _ := s.get(link); resp.StatusCode != http.StatusNotFound {
			t.Errorf("link to a dropped picture: %d", resp.StatusCode)
		}
		found := false
		for _, e := range s.events("type=stranger&limit=100") {
			found = found || strings.Contains(e.Detail, firstID+" deleted by retention")
		}
		if !found {
			t.Error("no event for the dropped picture")
		}
	})
	t.Run("Restart", func(t *testing.T) {
		var l struct{ Items []struct{ ID, URL string } }
		s.apiJSON("GET", "/api/v1/strangers", nil, http.StatusOK, &l)
		s.stop()
		s2 := startServerWith(t, dir, func(c *config) { c.now = clk.now; c.KeepPictures = 4 })
		if n := s2.strangerCount(); n != 4 {
			t.Errorf("%d pictures after restart", n)
		}
		// A link made before the restart still works: the key is kept.
		if resp, body := s2.get(l.Items[0].URL); resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("old link after restart: %d", resp.StatusCode)
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// sseClient reads a stream into messages: "id data" per event, ": ping"
// for heartbeats.
func (s *testServer) stream(token, lastID string) (msgs chan string, stop func()) {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.url+"/api/v1/events/stream", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		s.t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	msgs = make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		id := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "data: "):
				msgs <- id + " " + line[6:]
			case strings.HasPrefix(line, ":"):
				msgs <- line
			}
		}
		close(msgs)
	}()
	return msgs, func() { resp.Body.Close() }
}

func TestEventStream(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.heartbeat = 100 * time.Millisecond })
	door := s.device("door", s.createDevice("door", "lock"), "lock")
	t.Cleanup(ackLoop(t, door, "door", lockStates))
	bob := s.createUser("bob", "member")
	msgs, stop := s.stream(testAdminToken, "")
	defer stop()
	bobMsgs, stopBob := s.stream(bob, "")
	defer stopBob()

	var c commandJSON
	s.apiJSON("POST", "/api/v1/devices/door/lock?wait=5s", nil, http.StatusOK, &c)
	var seen []string
	var firstID string
	deadline := time.After(5 * time.Second)
	pings := 0
	for len(seen) < 2 {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, ":") {
				pings++
				continue
			}
			id, data, _ := strings.Cut(m, " ")
			var e eventJSON
			json.Unmarshal([]byte(data), &e)
			if e.ID != id {
				t.Errorf("SSE id %q, event id %q", id, e.ID)
			}
			if e.Command == c.ID {
				if firstID == "" {
					firstID = id
				}
				seen = append(seen, e.Type)
			}
		case <-deadline:
			t.Fatalf("stream saw %v of the command's events", seen)
		}
	}
	if strings.Join(seen, ",") != "command,ack" {
		t.Errorf("stream order %v, want command,ack", seen)
	}
	time.Sleep(250 * time.Millisecond)
	for len(msgs) > 0 {
		if strings.HasPrefix(<-msgs, ":") {
			pings++
		}
	}
	if pings == 0 {
		t.Error("no heartbeat")
	}
	for len(bobMsgs) > 0 {
		if m := <-bobMsgs; !strings.HasPrefix(m, ":") {
			t.Errorf("bob, without a grant, received %s", m)
		}
	}

	t.Run("Resume", func(t *testing.T) {
		again, stop := s.stream(testAdminToken, firstID)
		defer stop()
		select {
		case m := <-again:
			for strings.HasPrefix(m, ":") {
				m = <-again
			}
			_, data, _ := strings.Cut(m, " ")
			var e eventJSON
			json.Unmarshal([]byte(data), &e)
			if e.Type != "ack" || e.Command != c.ID {
				t.Errorf("first event after Last-Event-ID: %+v, want the ack it missed", e)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("nothing replayed after Last-Event-ID")
		}
	})
	t.Run("ErrBadLastEventID", func(t *testing.T) {
		req, _ := http.NewRequest("GET", s.url+"/api/v1/events/stream", nil)
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		req.Header.Set("Last-Event-ID", "../../x")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("bad Last-Event-ID: %d", resp.StatusCode)
		}
	})
}
