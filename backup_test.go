package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

func TestOnlineBackup(t *testing.T) {
	s := startServer(t, "")
	dev := s.device("door", s.createDevice("door", "lock"), "lock")
	member := s.createUser("alice", "member")

	// A device keeps reporting while the backup streams.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			dev.c.Publish("toserver", 1, false, []string{"state locked", "state unlocked"}[i%2]).WaitTimeout(5 * time.Second)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	req, _ := http.NewRequest("GET", s.url+"/api/v1/backup", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	close(stop)
	wg.Wait()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: %d %s", resp.StatusCode, body)
	}
	if n, _ := strconv.Atoi(resp.Header.Get("Content-Length")); n != len(body) || n == 0 {
		t.Errorf("Content-Length %q, body %d bytes", resp.Header.Get("Content-Length"), len(body))
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.Contains(cd, `filename="gatehouse-`) {
		t.Errorf("Content-Disposition %q", cd)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	os.WriteFile(path, body, 0o600)
	if v, err := store.Inspect(path); err != nil || v != store.SchemaVersion {
		t.Fatalf("backup file: schema %d, %v", v, err)
	}
	// The snapshot is a working data dir.
	dir := filepath.Dir(path)
	os.Rename(path, filepath.Join(dir, "gatehouse.db"))
	b := startServer(t, dir)
	var d deviceJSON
	b.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	if d.State != "locked" && d.State != "unlocked" {
		t.Errorf("device in the backup: %+v", d)
	}
	if st, _ := s.as(member, "GET", "/api/v1/backup", nil); st != http.StatusForbidden {
		t.Errorf("member backup: %d", st)
	}
}

func TestOfflineBackupRestore(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	secret := s.createDevice("door", "lock")
	backup := filepath.Join(t.TempDir(), "b.db")
	ctx := context.Background()
	args := func(a ...string) []string { return append([]string{a[0], "--data", dir}, a[1:]...) }

	if err := run(ctx, args("backup", backup), noenv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "stop the server first") {
		t.Errorf("backup while running: %v", err)
	}
	if err := run(ctx, args("restore", backup), noenv, io.Discard, io.Discard); err == nil {
		t.Error("restore while running succeeded")
	}
	s.stop()
	if err := run(ctx, args("backup", backup), noenv, io.Discard, io.Discard); err != nil {
		t.Fatalf("backup: %v", err)
	}
	// Change the state, then go back to the backup.
	s2 := startServer(t, dir)
	s2.apiJSON("DELETE", "/api/v1/devices/door", nil, http.StatusNoContent, nil)
	s2.stop()
	var stderr bytes.Buffer
	if err := run(ctx, args("restore", backup), noenv, io.Discard, &stderr); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !strings.Contains(stderr.String(), "previous data file kept as") {
		t.Errorf("restore did not say where the old file went: %q", stderr.String())
	}
	s3 := startServer(t, dir)
	s3.device("door", secret, "lock") // the device and its secret are back

	foreign := filepath.Join(t.TempDir(), "foreign.db")
	os.WriteFile(foreign, bytes.Repeat([]byte{7}, 8192), 0o600)
	s3.stop()
	if err := run(ctx, args("restore", foreign), noenv, io.Discard, io.Discard); err == nil {
		t.Error("restored a foreign file")
	}
}

func TestExportImportCommands(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	dev := s.device("door", s.createDevice("door", "lock"), "lock")
	dev.publish("toserver", false, "state jammed")
	s.createUser("alice", "guest")
	s.grant(map[string]any{"user": "alice", "device": "door", "hours": "09:00-12:00"})
	s.stop()
	ctx := context.Background()

	var first bytes.Buffer
	if err := run(ctx, []string{"export", "--data", dir}, noenv, &first, io.Discard); err != nil {
		t.Fatalf("export: %v", err)
	}
	file := filepath.Join(t.TempDir(), "export.json")
	os.WriteFile(file, first.Bytes(), 0o600)
	dir2 := filepath.Join(t.TempDir(), "new")
	if err := run(ctx, []string{"import", "--data", dir2, file}, noenv, io.Discard, io.Discard); err != nil {
		t.Fatalf("import: %v", err)
	}
	out := filepath.Join(t.TempDir(), "again.json")
	if err := run(ctx, []string{"export", "--data", dir2, out}, noenv, io.Discard, io.Discard); err != nil {
		t.Fatalf("export again: %v", err)
	}
	second, _ := os.ReadFile(out)
	if !bytes.Equal(first.Bytes(), second) {
		t.Error("export → import → export is not byte-identical")
	}
	if err := run(ctx, []string{"import", "--data", dir2, file}, noenv, io.Discard, io.Discard); err == nil {
		t.Error("import into a data dir that has a store succeeded")
	}
	// The imported state serves.
	s2 := startServer(t, dir2)
	var d deviceJSON
	s2.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	if d.State != "jammed" {
		t.Errorf("imported device %+v", d)
	}
}

// webp makes a picture of n bytes that the server takes as WebP.
func webp(n int, shade byte) []byte {
	b := bytes.Repeat([]byte{shade}, n)
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(n-8))
	copy(b[8:], "WEBPVP8X") // an extended WebP with a 1×1 canvas
	binary.LittleEndian.PutUint32(b[16:], 10)
	clear(b[20:30])
	return b
}

// A backup download whose client stops reading must not hold up the
// server's writes. bbolt remaps the file when a write makes it grow, and
// the remap waits for every open read transaction: a snapshot streamed
// from inside one (as it was) froze every write behind a stalled client.
func TestOnlineBackupStalledClientDoesNotBlockWrites(t *testing.T) {
	dir := t.TempDir()
	// 8 MiB of pictures, more than the socket buffers hold, so the
	// server's writes to the stalled client block.
	db, err := store.Open(filepath.Join(dir, "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx actions.Tx) error {
		for i := 0; i < 2; i++ {
			e := actions.Event{Time: time.Now(), Type: actions.EventStranger, Device: "cam"}
			if err := tx.AppendEvent(&e); err != nil {
				return err
			}
			if err := tx.PutPicture(actions.Stranger{ID: e.ID, Device: "cam", Time: e.Time, Type: "image/webp"}, webp(4<<20, byte(i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := startServer(t, dir)
	camSecret := s.createDevice("cam", "camera")

	// The stalled client reads the answer's header, then nothing.
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A fixed receive buffer: the kernel's tuning would otherwise take in
	// tens of MiB on loopback before the server's writes block.
	conn.(*net.TCPConn).SetReadBuffer(256 << 10)
	req, _ := http.NewRequest("GET", s.url+"/api/v1/backup", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength < 8<<20 {
		t.Fatalf("backup: %d, %d bytes", resp.StatusCode, resp.ContentLength)
	}

	// Meanwhile pictures make the file more than double, so bbolt must
	// remap it (its map is at most twice the file's size at the start).
	size := func() int64 {
		fi, err := os.Stat(filepath.Join(dir, "gatehouse.db"))
		if err != nil {
			t.Error(err)
			return 1 << 62
		}
		return fi.Size()
	}
	start := size()
	done := make(chan error, 1)
	go func() {
		for i := 0; size() <= 2*start; i++ {
			if i == 100 {
				done <- fmt.Errorf("the file did not grow: %d bytes, %d at the start", size(), start)
				return
			}
			if st, body := s.upload("/api/v1/strangers", "cam", camSecret, "image/webp", webp(2<<20, byte(10+i))); st != http.StatusCreated {
				done <- fmt.Errorf("upload %d: %d %s", i, st, body)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		conn.Close() // lets the server go on, so the test ends
		<-done
		t.Fatal("writes waited for the stalled backup client")
	}

	// The stalled download then completes, with the state from its start.
	body, err := io.ReadAll(resp.Body)
	if err != nil || int64(len(body)) != resp.ContentLength {
		t.Fatalf("backup body: %d of %d bytes, %v", len(body), resp.ContentLength, err)
	}
	snap := filepath.Join(t.TempDir(), "gatehouse.db")
	os.WriteFile(snap, body, 0o600)
	r, err := store.Check(snap)
	if err != nil || len(r.Problems) > 0 {
		t.Fatalf("check of the backup: %+v %v", r, err)
	}
	b, err := store.Open(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.View(func(tx actions.Tx) error {
		all, err := tx.AllStrangers()
		if err != nil || len(all) != 2 {
			t.Errorf("pictures in the backup: %d, %v; want the 2 from before it", len(all), err)
		}
		return nil
	})
	if left, _ := filepath.Glob(filepath.Join(dir, ".gatehouse-backup-*")); len(left) > 0 {
		t.Errorf("temporary snapshot left behind: %v", left)
	}
}

// makeBackup writes a small store at a new path and returns the path.
func makeBackup(t *testing.T, events int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "backup.db")
	db, err := store.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := db.Update(func(tx actions.Tx) error {
		if err := tx.PutDevice(actions.Device{ID: "door", Kind: "lock", Name: "door", State: "locked", Created: t0, SecretHash: actions.Hash("secret")}); err != nil {
			return err
		}
		for i := 0; i < events; i++ {
			if err := tx.AppendEvent(&actions.Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Type: "state",
				Device: "door", Detail: "marker-marker-marker-marker"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	return src
}

// Restore runs every check on the backup before it swaps it in: a backup
// with a damaged page deep in a bucket (which only a walk of the whole
// file finds) is refused, and the data file is left as it was.
func TestRestoreRefusesDamagedBackup(t *testing.T) {
	src := makeBackup(t, 3000)
	// Damage the element count of one leaf page of the events bucket.
	data, _ := os.ReadFile(src)
	const psize = 4096
	damaged := false
	for off := 2 * psize; off+psize <= len(data); off += psize {
		if flags := int(data[off+8]) | int(data[off+9])<<8; flags == 0x02 && bytes.Contains(data[off:off+psize], []byte("marker")) {
			data[off+10], data[off+11] = 0xFF, 0x7F
			damaged = true
			break
		}
	}
	if !damaged {
		t.Fatal("no events leaf page to damage")
	}
	os.WriteFile(src, data, 0o600)

	dir := t.TempDir()
	current := makeBackup(t, 1)
	os.Rename(current, filepath.Join(dir, "gatehouse.db"))
	before, _ := os.ReadFile(filepath.Join(dir, "gatehouse.db"))
	err := run(context.Background(), []string{"restore", "--data", dir, src}, noenv, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("restore accepted a backup with a damaged page")
	}
	msg := err.Error()
	t.Log(msg)
	if !strings.Contains(msg, "backup "+src+" is damaged (") || !strings.Contains(msg, "nothing was changed") || strings.Contains(msg, "\n") {
		t.Errorf("restore error %q", msg)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "gatehouse.db")); !bytes.Equal(before, after) {
		t.Error("a refused restore changed the data file")
	}
	if kept, _ := filepath.Glob(filepath.Join(dir, "*before-restore*")); len(kept) > 0 {
		t.Errorf("a refused restore moved the data file: %v", kept)
	}
}

// Disaster recovery on a new machine: restore into a data dir that does
// not exist yet creates it.
func TestRestoreIntoFreshDataDir(t *testing.T) {
	src := makeBackup(t, 1)
	dir := filepath.Join(t.TempDir(), "new", "data")
	if err := run(context.Background(), []string{"restore", "--data", dir, src}, noenv, io.Discard, io.Discard); err != nil {
		t.Fatalf("restore into a fresh data dir: %v", err)
	}
	s := startServer(t, dir)
	var d deviceJSON
	s.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
}

// Restore is the way out of a damaged data file, so it must work on one:
// it takes the file's lock without reading it.
func TestRestoreReplacesDamagedDataFile(t *testing.T) {
	src := makeBackup(t, 1)
	dir := t.TempDir()
	good, _ := os.ReadFile(makeBackup(t, 1))
	os.WriteFile(filepath.Join(dir, "gatehouse.db"), good[:3*4096], 0o600)
	if err := run(context.Background(), []string{"restore", "--data", dir, src}, noenv, io.Discard, io.Discard); err != nil {
		t.Fatalf("restore over a damaged data file: %v", err)
	}
	s := startServer(t, dir)
	var d deviceJSON
	s.apiJSON("GET", "/api/v1/devices/door", nil, http.StatusOK, &d)
	if kept, _ := filepath.Glob(filepath.Join(dir, "gatehouse.db.before-restore-*")); len(kept) != 1 {
		t.Errorf("the damaged file was not kept aside: %v", kept)
	}
}
