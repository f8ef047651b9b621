package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
