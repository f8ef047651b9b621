package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
		{"UnknownFlag", []string{"--nope"}, "unknown flag --nope\nrun 'gatehouse help serve' for its arguments and flags"},
		{"UnknownFlagOffline", []string{"backup", "--nope", "f"}, "unknown flag --nope\nrun 'gatehouse help backup'"},
		{"BadFlagValue", []string{"--max-streams-per-user", "x"}, `invalid value "x" for flag --max-streams-per-user`},
		{"MissingFlagValue", []string{"--data"}, "flag needs an argument: --data"},
		{"HelpUnknown", []string{"help", "frobnicate"}, `unknown command "frobnicate"`},
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
	// Without GATEHOUSE_ADMIN_TOKEN the bootstrap token is printed once,
	// when the server is up: the listeners may answer a moment before.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "admin token: "); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no admin token line in %q", stderr.String())
		}
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
// goroutines; its zero value is ready to use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
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

// Help is asked for, so it goes to stdout and succeeds: the overview
// lists every command and writes flags as the docs do (--data).
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), args, noenv, &out, &errb); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if errb.Len() > 0 {
			t.Errorf("%v wrote to stderr: %q", args, errb.String())
		}
		for _, c := range commands {
			if !strings.Contains(out.String(), "\n  "+c.use+" ") {
				t.Errorf("%v: command %q missing from\n%s", args, c.use, out.String())
			}
		}
		if !strings.Contains(out.String(), "\n  --data string\n") || strings.Contains(out.String(), "\n  -data") {
			t.Errorf("%v: flags not written as --data:\n%s", args, out.String())
		}
	}
}

// gatehouse help COMMAND and gatehouse COMMAND --help print the same page:
// the command with its arguments, what it does, an example, its flags.
func TestHelpCommand(t *testing.T) {
	want := map[string]string{
		"backup":      "usage: gatehouse backup [--data DIR] FILE\n",
		"restore":     "usage: gatehouse restore [--data DIR] FILE\n",
		"export":      "usage: gatehouse export [--data DIR] [FILE]\n",
		"import":      "usage: gatehouse import [--data DIR] FILE\n",
		"token":       "usage: gatehouse token create --user NAME",
		"serve":       "usage: gatehouse serve [flags]\n",
		"healthcheck": "usage: gatehouse healthcheck [--http ADDR]\n",
		"check":       "usage: gatehouse check [--data DIR]\n",
		"compact":     "usage: gatehouse compact [--data DIR]\n",
		"version":     "usage: gatehouse version \n",
		"help":        "usage: gatehouse help [COMMAND]\n",
	}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			var help, flagHelp bytes.Buffer
			if err := run(context.Background(), []string{"help", c.name}, noenv, &help, io.Discard); err != nil {
				t.Fatal(err)
			}
			args := []string{c.name, "--help"}
			if c.name == "token" {
				args = []string{"token", "create", "--help"}
			}
			if c.name != "help" {
				if err := run(context.Background(), args, noenv, &flagHelp, io.Discard); err != nil {
					t.Fatal(err)
				}
				if help.String() != flagHelp.String() {
					t.Errorf("help %s and %v differ:\n%s\n---\n%s", c.name, args, help.String(), flagHelp.String())
				}
			}
			if !strings.HasPrefix(help.String(), want[c.name]) || !strings.Contains(help.String(), "\nexample:\n  ") {
				t.Errorf("help %s:\n%s\nwant it to start %q and hold an example", c.name, help.String(), want[c.name])
			}
			if c.name == "backup" && !strings.Contains(help.String(), "\n  --data string\n") {
				t.Errorf("help backup lists no --data:\n%s", help.String())
			}
		})
	}
	var out bytes.Buffer
	run(context.Background(), []string{"help", "healthcheck"}, noenv, &out, io.Discard)
	if strings.Contains(out.String(), "--max-connections") {
		t.Errorf("help healthcheck lists the server's limits:\n%s", out.String())
	}
}

func TestVersionFlag(t *testing.T) {
	var a, b bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, noenv, &a, io.Discard); err != nil {
		t.Fatal(err)
	}
	run(context.Background(), []string{"version"}, noenv, &b, io.Discard)
	if a.String() != "gatehouse "+version+"\n" || a.String() != b.String() {
		t.Errorf("--version %q, version %q", a.String(), b.String())
	}
}

// runMain runs the test binary as gatehouse with args and returns its exit
// status, stdout and stderr (see TestMainDamagedDataFileExitCode).
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainDamagedDataFileExitCode$")
	cmd.Env = append(os.Environ(), "GATEHOUSE_TEST_MAIN_ARGS="+strings.Join(args, "\n"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// The binary: --help exits 0 with the overview on stdout; a wrong flag
// exits 1 with the error once and a one-line hint, not the usage.
func TestMainHelpAndWrongFlag(t *testing.T) {
	code, stdout, stderr := runMain(t, "--help")
	if code != 0 || !strings.HasPrefix(stdout, "usage: gatehouse [COMMAND]") || stderr != "" {
		t.Errorf("--help: exit %d, stdout %.60q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runMain(t, "--nope")
	want := "gatehouse: unknown flag --nope\nrun 'gatehouse help serve' for its arguments and flags\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("--nope: exit %d, stdout %q, stderr %q; want exit 1 and stderr %q", code, stdout, stderr, want)
	}
}

// A busy port is found before anything is made: no data dir, no admin
// token printed, and the error names the flag and the variable to change.
func TestBusyPortMakesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	for _, tc := range []struct{ flag, env string }{{"mqtt", "GATEHOUSE_MQTT"}, {"http", "GATEHOUSE_HTTP"}} {
		t.Run(tc.flag, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "new", "data")
			args := []string{"--data", dir, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}
			args = append(args, "--"+tc.flag, busy)
			var stderr bytes.Buffer
			err := run(context.Background(), args, noenv, io.Discard, &stderr)
			wantOneLine(t, err, tc.flag+" listen on "+busy, "in use", "--"+tc.flag+" or "+tc.env)
			if _, serr := os.Stat(filepath.Dir(dir)); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("a failed start made %s", filepath.Dir(dir))
			}
			if strings.Contains(stderr.String(), "admin token") {
				t.Errorf("a failed start printed an admin token: %q", stderr.String())
			}
		})
	}
	t.Run("mqtts", func(t *testing.T) {
		certDir := t.TempDir()
		writeCert(t, certDir, 1)
		cert, key := filepath.Join(certDir, "cert.pem"), filepath.Join(certDir, "key.pem")
		dir := filepath.Join(t.TempDir(), "data")
		err := run(context.Background(), []string{"--data", dir, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--mqtts", busy, "--tls-cert", cert, "--tls-key", key}, noenv, io.Discard, io.Discard)
		wantOneLine(t, err, "mqtts listen on "+busy, "--mqtts or GATEHOUSE_MQTTS")
		if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("a failed start made %s", dir)
		}
	})
	// 1883 is Mosquitto's port: taken here, by Mosquitto or by the test.
	if ln, err := net.Listen("tcp", "127.0.0.1:1883"); err == nil {
		defer ln.Close()
	}
	_, err = listen("mqtt", "127.0.0.1:1883")
	wantOneLine(t, err, "Mosquitto", "--mqtt or GATEHOUSE_MQTT")
}

// A start that fails after the data file was made (here: an admin token
// too short for a first start) removes the file and the dirs it made; an
// existing data dir and file are kept.
func TestFailedFirstStartLeavesNothing(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "a", "data")
	env := map[string]string{"GATEHOUSE_ADMIN_TOKEN": "short"}
	err := run(context.Background(), []string{"--data", dir, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "error"},
		func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "at least 16 characters") {
		t.Fatalf("start with a short first admin token: %v", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("a failed first start left %v in %s", entries, parent)
	}

	existing := t.TempDir()
	os.WriteFile(filepath.Join(existing, "notes.txt"), []byte("mine"), 0o600)
	undo, err := makeDataDir(existing)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(existing, "gatehouse.db"), nil, 0o600) // as a store would
	undo()
	if _, err := os.Stat(filepath.Join(existing, "notes.txt")); err != nil {
		t.Errorf("undo removed what was there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(existing, "gatehouse.db")); err == nil {
		t.Error("undo kept the data file the failed start made")
	}
	os.WriteFile(filepath.Join(existing, "gatehouse.db"), []byte("old"), 0o600)
	undo, _ = makeDataDir(existing)
	undo()
	if b, _ := os.ReadFile(filepath.Join(existing, "gatehouse.db")); string(b) != "old" {
		t.Error("undo removed a data file that was there before")
	}
}

// GATEHOUSE_ADMIN_TOKEN only names the first admin's token: set on a store
// that has users, it is ignored, and the server says so, naming the data
// file and the command that makes a new token.
func TestAdminTokenIgnoredWarns(t *testing.T) {
	dir := t.TempDir()
	startOnce := func(token string) string {
		t.Helper()
		var stderr syncBuffer
		a, err := start(config{Data: dir, MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", CommandTTL: time.Second,
			LogLevel: "warn", AdminToken: token, Location: time.UTC}, &stderr)
		if err != nil {
			t.Fatal(err)
		}
		a.close()
		return stderr.String()
	}
	if out := startOnce("first-admin-token-0123456789"); strings.Contains(out, "ignored") {
		t.Errorf("first start warned: %q", out)
	}
	out := startOnce("second-admin-token-0123456789")
	for _, want := range []string{"GATEHOUSE_ADMIN_TOKEN is ignored", filepath.Join(dir, "gatehouse.db"), "gatehouse token create --data " + dir} {
		if !strings.Contains(out, want) {
			t.Errorf("second start: %q, want it to contain %q", out, want)
		}
	}
	if out := startOnce(""); strings.Contains(out, "ignored") {
		t.Errorf("start without the variable warned: %q", out)
	}
}

// A data dir the server may not write names the user it runs as.
func TestDataDirPermissionNamesUser(t *testing.T) {
	err := dataDirError("/srv/gatehouse", &os.PathError{Op: "mkdir", Path: "/srv/gatehouse", Err: os.ErrPermission})
	wantOneLine(t, err, "data dir /srv/gatehouse", "the server runs as ", fmt.Sprintf("uid %d", os.Geteuid()), "--data or GATEHOUSE_DATA")
	if os.Geteuid() == 0 {
		t.Log("root writes anywhere: the end-to-end half needs another user")
		return
	}
	parent := t.TempDir()
	os.Chmod(parent, 0o500)
	defer os.Chmod(parent, 0o700)
	err = run(context.Background(), []string{"--data", filepath.Join(parent, "data"), "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, noenv, io.Discard, io.Discard)
	wantOneLine(t, err, "the server runs as ")
}

// A data dir that is not a directory, or whose gatehouse.db is some other
// program's file, is refused in one line and left as it was.
func TestForeignDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("not a dir"), 0o600)
	err := run(context.Background(), []string{"--data", file, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, noenv, io.Discard, io.Discard)
	wantOneLine(t, err, "data dir "+file)

	dir := t.TempDir()
	foreign := []byte("SQLite format 3\x00" + strings.Repeat("x", 5000))
	os.WriteFile(filepath.Join(dir, "gatehouse.db"), foreign, 0o600)
	var stderr bytes.Buffer
	err = run(context.Background(), []string{"--data", dir, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, noenv, io.Discard, &stderr)
	wantOneLine(t, err, filepath.Join(dir, "gatehouse.db"))
	if b, _ := os.ReadFile(filepath.Join(dir, "gatehouse.db")); !bytes.Equal(b, foreign) {
		t.Error("the foreign file was changed")
	}
	if strings.Contains(stderr.String(), "admin token") {
		t.Error("an admin was made")
	}
}

// backup and export write files that hold secrets' hashes and pictures:
// mode 0600, and a one-line summary (what, how much, where, how long) on
// stderr, so that stdout stays the export alone.
func TestOfflineFilesAndSummaries(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	s.createDevice("door", "lock")
	s.stop()
	out := t.TempDir()
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "--data", dir, filepath.Join(out, "b.db")}, "backup: "},
		{[]string{"export", "--data", dir, filepath.Join(out, "e.json")}, "export: "},
		{[]string{"import", "--data", filepath.Join(out, "imported"), filepath.Join(out, "e.json")}, "import: "},
		{[]string{"restore", "--data", filepath.Join(out, "restored"), filepath.Join(out, "b.db")}, "restore: "},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(ctx, tc.args, noenv, &stdout, &stderr); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		file := tc.args[len(tc.args)-1]
		line := strings.TrimSuffix(stderr.String(), "\n")
		if stdout.Len() > 0 || strings.Contains(line, "\n") || !strings.HasPrefix(line, tc.want) ||
			!strings.Contains(line, file) || !strings.Contains(line, " KiB") || !strings.Contains(line, "(took ") {
			t.Errorf("%v: stdout %q, stderr %q; want one summary line", tc.args, stdout.String(), stderr.String())
		}
		t.Log(line)
	}
	for _, f := range []string{"b.db", "e.json"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v, want 0600", f, err, st.Mode().Perm())
		}
	}
	// An export never overwrites a file, and a refused import leaves no
	// data dir behind.
	if err := run(ctx, []string{"export", "--data", dir, filepath.Join(out, "e.json")}, noenv, io.Discard, io.Discard); err == nil {
		t.Error("export overwrote a file")
	}
	os.WriteFile(filepath.Join(out, "bad.json"), []byte(`{"format":"other"}`), 0o600)
	fresh := filepath.Join(out, "fresh")
	if err := run(ctx, []string{"import", "--data", fresh, filepath.Join(out, "bad.json")}, noenv, io.Discard, io.Discard); err == nil {
		t.Error("imported a foreign file")
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Error("a refused import left its data dir")
	}
	// Exported to stdout, the summary is on stderr.
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"export", "--data", dir}, noenv, &stdout, &stderr); err != nil || !json.Valid(stdout.Bytes()) ||
		!strings.Contains(stderr.String(), "written to stdout") {
		t.Errorf("export to stdout: %v, stderr %q", err, stderr.String())
	}
}

func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{0, 100 << 20, "restore: reading and checking…, 3s"},
		{25 << 20, 100 << 20, "restore: 25.0 MiB of 100.0 MiB (25%), 3s"},
		{3 << 30, 0, "restore: 3.00 GiB, 3s"},
	} {
		if got := progressLine("restore", tc.done, tc.total, 3200*time.Millisecond); got != tc.want {
			t.Errorf("progressLine(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}
