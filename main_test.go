package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/actions"
	"gatehouse/store"
)

func noenv(string) string { return "" }

func TestRunArgs(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"FlagAfterArgument", []string{"serve", "extra", "--data", "x"}, "flag --data after an argument"},
		{"Argument", []string{"serve", "extra"}, "takes no arguments"},
		{"UnknownCommand", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"UnknownFlag", []string{"--nope"}, "flag provided but not defined"},
		{"BadTTL", []string{"--command-ttl", "10m"}, "--command-ttl"},
		{"BadLogLevel", []string{"--log-level", "loud", "--data", "DIR", "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, "--log-level"},
		{"EmptyMQTTAddress", []string{"--mqtt", ""}, "--mqtt and --http need an address"},
		{"BackupNoArgs", []string{"backup"}, "usage: gatehouse backup"},
		{"BackupNoDataFile", []string{"backup", "--data", "DIR", "f.db"}, "no data file"},
		{"ImportFlagLate", []string{"import", "f.json", "--data", "x"}, "flag --data after an argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for i, a := range tc.args {
				if a == "DIR" {
					tc.args[i] = dir
				}
			}
			var out, errb bytes.Buffer
			err := run(context.Background(), tc.args, noenv, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run %v = %v, want error containing %q", tc.args, err, tc.want)
			}
		})
	}
	t.Run("Version", func(t *testing.T) {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"version"}, noenv, &out, &out); err != nil || !strings.HasPrefix(out.String(), "gatehouse ") {
			t.Errorf("version: %v %q", err, out.String())
		}
	})
}

func TestRunServe(t *testing.T) {
	dir := t.TempDir()
	httpAddr := freeAddr(t)
	env := map[string]string{
		"GATEHOUSE_DATA": dir, "GATEHOUSE_MQTT": "127.0.0.1:0", "GATEHOUSE_HTTP": httpAddr,
		"GATEHOUSE_LOG_LEVEL": "warn",
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &stderr, &stderr) }()

	// The health check command sees it come up.
	deadline := time.Now().Add(10 * time.Second)
	for healthcheck(httpAddr, false) != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := run(context.Background(), []string{"healthcheck", "--http", httpAddr}, noenv, &stderr, &stderr); err != nil {
		t.Fatalf("healthcheck: %v", err)
	}
	// Without GATEHOUSE_ADMIN_TOKEN the bootstrap token is printed once.
	if !strings.Contains(stderr.String(), "admin token: ") {
		t.Errorf("no admin token line in %q", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "gatehouse.db")); err != nil {
		t.Errorf("data file: %v", err)
	}

	t.Run("BusyPort", func(t *testing.T) {
		err := run(context.Background(), []string{"--data", t.TempDir(), "--mqtt", "127.0.0.1:0", "--http", httpAddr}, noenv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "http listen on "+httpAddr) {
			t.Errorf("busy port: %v", err)
		}
	})
	t.Run("DataInUse", func(t *testing.T) {
		err := run(context.Background(), []string{"--data", dir, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, noenv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Errorf("second server on the same data: %v", err)
		}
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	// Restarting keeps the admin: no new token is printed.
	before := strings.Count(stderr.String(), "admin token: ")
	a, err := start(config{Data: dir, MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", CommandTTL: time.Second, LogLevel: "error"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	a.close()
	if after := strings.Count(stderr.String(), "admin token: "); after != before {
		t.Errorf("restart printed a new admin token")
	}
}

func TestRunDataDirNotWritable(t *testing.T) {
	// Root writes anywhere, so the test uses a path below a regular file,
	// which fails for everyone.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	err := run(context.Background(), []string{"--data", filepath.Join(file, "data"), "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, noenv, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Errorf("unusable data dir: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *syncBuffer) lock() {
	if b.mu == nil {
		b.mu = make(chan struct{}, 1)
	}
	b.mu <- struct{}{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.lock()
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.lock()
	defer func() { <-b.mu }()
	return b.buf.String()
}

func TestTokenCreate(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir).stop() // token create works on an existing store only
	ctx := context.Background()
	var out bytes.Buffer
	if err := run(ctx, []string{"token", "create", "--data", dir, "--user", "root"}, noenv, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("token create: %v", err)
	}
	token := strings.TrimSpace(out.String())
	if len(token) != 64 || strings.ContainsAny(token, " \n") {
		t.Fatalf("token create printed %q, want the token alone", out.String())
	}
	s := startServer(t, dir)
	if st, body := s.as(token, "GET", "/api/v1/users", nil); st != http.StatusOK || !strings.Contains(body, `"role":"admin"`) {
		t.Errorf("new admin token: %d %s", st, body)
	}
	if err := run(ctx, []string{"token", "create", "--data", dir, "--user", "x"}, noenv, &out, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("token create while the server runs: %v", err)
	}
	s.stop()
	// The bootstrap admin and root are both admins; demoting one is fine,
	// demoting the last is refused.
	if err := run(ctx, []string{"token", "create", "--data", dir, "--user", "admin", "--role", "member"}, noenv, &out, &bytes.Buffer{}); err != nil {
		t.Errorf("demote one of two admins: %v", err)
	}
	if err := run(ctx, []string{"token", "create", "--data", dir, "--user", "root", "--role", "guest"}, noenv, &out, &bytes.Buffer{}); err == nil {
		t.Error("demoted the last admin")
	}
}

// damagedFiles returns damaged copies of a real data file: truncated at
// several sizes, empty, with garbage pages, and overwritten.
func damagedFiles(t *testing.T) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	s := startServer(t, dir)
	s.createDevice("door", "lock")
	s.createUser("alice", "member")
	s.stop()
	good, err := os.ReadFile(filepath.Join(dir, "gatehouse.db"))
	if err != nil {
		t.Fatal(err)
	}
	const ps = 4096
	garbage := func(from, to int) []byte {
		b := bytes.Clone(good)
		r := rand.New(rand.NewPCG(7, uint64(from)))
		for i := from * ps; i < to*ps && i < len(b); i++ {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	return map[string][]byte{
		"Empty":        {},
		"Truncated100": good[:100],
		"Truncated3P":  good[:3*ps],
		"Truncated4P":  good[:4*ps],
		"TruncatedMid": good[:len(good)/2+100],
		"GarbagePages": garbage(2, len(good)/ps),
		"GarbageMetas": garbage(0, 2),
		"Overwritten":  garbage(0, len(good)/ps),
	}
}

// wantOneLine checks err is a single plain line containing want.
func wantOneLine(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r") || strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") {
		t.Errorf("not one plain line: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q, want it to contain %q", msg, w)
		}
	}
}

// A damaged data file is refused in one line that says what is wrong and
// how to restore a backup, by the server and by every offline command
// that reads it, and is left as it was: an empty file is not silently
// made a new store with a new admin.
func TestRunDamagedDataFile(t *testing.T) {
	for name, data := range damagedFiles(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "gatehouse.db")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			restore := "restore a backup with: gatehouse restore --data " + dir + " FILE"
			ctx := context.Background()
			var stderr bytes.Buffer
			err := run(ctx, []string{"--data", dir, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, noenv, io.Discard, &stderr)
			wantOneLine(t, err, "data file "+path+" is damaged", restore)
			if !errors.Is(err, store.ErrDamaged) {
				t.Errorf("serve: %v does not match store.ErrDamaged", err)
			}
			t.Log(err)
			if strings.Contains(stderr.String(), "admin token") {
				t.Error("a new admin was made")
			}
			for _, args := range [][]string{
				{"backup", "--data", dir, filepath.Join(t.TempDir(), "b.db")},
				{"export", "--data", dir},
				{"token", "create", "--data", dir, "--user", "root"},
				{"compact", "--data", dir},
			} {
				err := run(ctx, args, noenv, io.Discard, io.Discard)
				wantOneLine(t, err, path+" is damaged", restore)
			}
			var out bytes.Buffer
			err = run(ctx, []string{"check", "--data", dir}, noenv, &out, io.Discard)
			wantOneLine(t, err, "check: data file "+path+" is damaged", restore)
			t.Logf("%s%v", out.String(), err)
			if !strings.HasPrefix(out.String(), path+": ") {
				t.Errorf("check printed %q, want the problems", out.String())
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
				t.Errorf("the refused file changed from %d to %d bytes", len(data), len(after))
			}
		})
	}
}

// The binary itself: a damaged data file ends it with exit status 1 and
// one line on stderr, no stack trace.
func TestMainDamagedDataFileExitCode(t *testing.T) {
	if args := os.Getenv("GATEHOUSE_TEST_MAIN_ARGS"); args != "" {
		os.Args = append([]string{"gatehouse"}, strings.Split(args, "\n")...)
		main()
		os.Exit(0)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gatehouse.db"), make([]byte, 3*4096), 0o600)
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainDamagedDataFileExitCode$")
	cmd.Env = append(os.Environ(), "GATEHOUSE_TEST_MAIN_ARGS="+strings.Join([]string{"--data", dir, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, "\n"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1; stderr %q", err, stderr.String())
	}
	want := "gatehouse: data file " + filepath.Join(dir, "gatehouse.db") + " is damaged"
	if lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
		t.Errorf("stderr %q, want one line starting %q", stderr.String(), want)
	}
}

// The offline commands that read the store never make one: pointed at a
// data dir without a store (a wrong --data, say), they say so.
func TestOfflineCommandsNeedAStore(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		for _, args := range [][]string{
			{"backup", "--data", dir, filepath.Join(t.TempDir(), "b.db")},
			{"export", "--data", dir},
			{"token", "create", "--data", dir, "--user", "root"},
			{"check", "--data", dir},
			{"compact", "--data", dir},
		} {
			err := run(context.Background(), args, noenv, io.Discard, io.Discard)
			wantOneLine(t, err, "no data file in "+dir, "check --data or GATEHOUSE_DATA")
			if _, err := os.Stat(filepath.Join(dir, "gatehouse.db")); err == nil {
				t.Fatalf("%v made a store", args)
			}
		}
	}
}

func TestCheckCompactCommands(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gatehouse.db")
	// Many pictures, most then deleted, leave free pages.
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 100; i++ {
		err := db.Update(func(tx actions.Tx) error {
			e := actions.Event{Time: time.Now(), Type: actions.EventStranger, Device: "cam"}
			if err := tx.AppendEvent(&e); err != nil {
				return err
			}
			ids = append(ids, e.ID)
			return tx.PutPicture(actions.Stranger{ID: e.ID, Device: "cam", Time: e.Time, Type: "image/webp"}, webp(30<<10, byte(i)))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Update(func(tx actions.Tx) error {
		for _, id := range ids[:95] {
			tx.DeletePicture(id)
		}
		return nil
	})
	db.Close()
	s := startServer(t, dir)
	secret := s.createDevice("door", "lock")
	ctx := context.Background()
	for _, cmd := range []string{"check", "compact"} {
		err := run(ctx, []string{cmd, "--data", dir}, noenv, io.Discard, io.Discard)
		wantOneLine(t, err, "in use", "stop the server first")
	}
	s.stop()

	var out bytes.Buffer
	if err := run(ctx, []string{"check", "--data", dir}, noenv, &out, io.Discard); err != nil {
		t.Fatalf("check: %v", err)
	}
	if !strings.HasPrefix(out.String(), "ok "+path+": ") || !strings.Contains(out.String(), "schema version") {
		t.Errorf("check printed %q", out.String())
	}
	before, _ := os.Stat(path)
	out.Reset()
	if err := run(ctx, []string{"compact", "--data", dir}, noenv, &out, io.Discard); err != nil {
		t.Fatalf("compact: %v", err)
	}
	after, _ := os.Stat(path)
	if after.Size() >= before.Size()/2 {
		t.Errorf("compact: %d → %d bytes", before.Size(), after.Size())
	}
	if !strings.HasPrefix(out.String(), "compacted "+path+": ") || !strings.Contains(out.String(), " → ") {
		t.Errorf("compact printed %q", out.String())
	}
	t.Log(strings.TrimSpace(out.String()))
	out.Reset()
	if err := run(ctx, []string{"check", "--data", dir}, noenv, &out, io.Discard); err != nil {
		t.Fatalf("check after compact: %v", err)
	}
	t.Log(strings.TrimSpace(out.String()))
	// The compacted store serves: the device and its secret, the pictures.
	s = startServer(t, dir)
	s.device("door", secret, "lock")
	var l struct{ Items []json.RawMessage }
	s.apiJSON("GET", "/api/v1/strangers?limit=1000", nil, http.StatusOK, &l)
	if len(l.Items) != 5 {
		t.Errorf("pictures after compact: %d, want 5", len(l.Items))
	}
	if err := run(ctx, []string{"check", "--data", dir, "extra"}, noenv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "usage: gatehouse check") {
		t.Errorf("check with an argument: %v", err)
	}
}
