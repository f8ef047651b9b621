// Command gatehouse is the whole back end of a smart-lock, light and
// door-camera product: an MQTT broker, the actions devices and people
// trigger, a REST API, and one bbolt file holding the state.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	_ "time/tzdata" // grant windows need zones even in a distroless image

	"gatehouse/actions"
	"gatehouse/broker"
	"gatehouse/store"
	"gatehouse/web"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// shutdownTimeout bounds each step of a graceful stop.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal now ends the process at once
	}()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gatehouse:", err)
		os.Exit(1)
	}
}

// config is everything the server takes from flags and the environment.
type config struct {
	Data       string
	MQTT       string
	MQTTS      string
	HTTP       string
	TLSCert    string
	TLSKey     string
	CommandTTL time.Duration
	Location   *time.Location
	LogLevel   string
	// LogFormat is text or json. Metrics, when set, is a listen address
	// serving /metrics without authentication (docs/monitoring.md).
	LogFormat, Metrics string
	// Pictures: upload cap, retention quotas and signed link lifetime.
	PictureMax   int64
	KeepPictures int
	PictureMiB   int
	LinkTTL      time.Duration
	// KeepEvents (negative: no age limit) and KeepEventsMax bound the
	// event log; commands and pictures go with their events.
	KeepEvents    time.Duration
	KeepEventsMax int
	AdminToken    string
	// Scripts runs actions added at run time (Starlark, DESIGN §8).
	Scripts bool
	// Limits on what clients can make the server spend (docs/security.md).
	MQTTLimits                    broker.Limits
	HTTPMaxConns, HTTPMaxConnsPer int
	MaxStreams                    int
	MaxCommands                   int
	// testLog, when set, is where a test's server writes its log.
	testLog io.Writer
	// scriptLimits bound each script run; zero fields are the defaults.
	scriptLimits actions.ScriptLimits
	// connectTimeout is the MQTT CONNECT deadline; zero is the default.
	connectTimeout time.Duration
	// now is the clock; nil is time.Now. Tests move it.
	now func() time.Time
	// heartbeat is the SSE heartbeat interval; zero is the default.
	heartbeat time.Duration
	// uploadTimeout bounds a picture upload's body; zero is the default
	// (tests make it short).
	uploadTimeout time.Duration
}

// run is the testable entry point: gatehouse [COMMAND] [flags] [ARGS].
// Help asked for (help, --help, -h) goes to stdout and is no error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	err := runCommand(ctx, args, getenv, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func runCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 {
		switch args[0] {
		case "--version", "-version":
			cmd, args = "version", args[1:]
		case "--help", "-help", "-h":
			cmd, args = "help", args[1:] // the overview, not serve's help alone
		}
	}
	switch cmd {
	case "serve":
		cfg, err := parseConfig("serve", args, getenv, stdout)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stderr)
	case "healthcheck":
		cfg, err := parseConfig("healthcheck", args, getenv, stdout)
		if err != nil {
			return err
		}
		return healthcheck(cfg.HTTP, cfg.TLSCert != "")
	case "token":
		if len(args) > 0 && args[0] == "create" {
			return tokenCreate(args[1:], getenv, stdout, stderr)
		}
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return tokenCreate(args, getenv, stdout, stderr)
		}
		return hinted(errors.New("usage: gatehouse token create --user NAME [--role admin|member|guest]"), "token")
	case "version":
		fs := newFlagSet("version")
		if err := parseFlags(fs, "version", args, stdout); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return hinted(fmt.Errorf("version takes no arguments, got %q", fs.Args()), "version")
		}
		fmt.Fprintln(stdout, "gatehouse", version)
		return nil
	case "help":
		if len(args) == 0 {
			_, err := parseConfig("", []string{"--help"}, getenv, stdout)
			return err
		}
		if len(args) > 1 {
			return hinted(fmt.Errorf("help takes one command, got %q", args), "")
		}
		if args[0] == "help" {
			return printHelp(stdout, "help", newFlagSet("help"))
		}
		if commandNamed(args[0]) == nil {
			return hinted(fmt.Errorf("unknown command %q", args[0]), "")
		}
		return runCommand(ctx, []string{args[0], "--help"}, getenv, stdout, stderr)
	case "backup", "restore", "export", "import":
		return offline(cmd, args, getenv, stdout, stderr)
	case "check", "compact":
		return maintain(cmd, args, getenv, stdout, stderr)
	}
	return hinted(fmt.Errorf("unknown command %q", cmd), "")
}

// command is one command as help describes it.
type command struct {
	name, args, summary, example string
	// use and brief are its line in the overview.
	use, brief string
	flags      []string // the flags help lists; nil for all
}

var commands = []command{
	{name: "serve", args: "[flags]",
		summary: "Run the server (the default command): the MQTT broker, the REST API and the dashboard, with the state in --data. " +
			"On the first start, with no user yet, it creates admin with the token in GATEHOUSE_ADMIN_TOKEN, or with a random one printed once as \"admin token: …\"; later starts ignore the variable.",
		example: "GATEHOUSE_ADMIN_TOKEN=$(openssl rand -hex 32) gatehouse serve --data ./data --mqtt :1883 --http :8080",
		use:     "serve", brief: "run the server (the default)"},
	{name: "healthcheck", args: "[--http ADDR]",
		summary: "Exit 0 when the local server answers GET /healthz on --http (over HTTPS with --tls-cert); for Docker's HEALTHCHECK.",
		example: "gatehouse healthcheck --http 127.0.0.1:8080", flags: []string{"http", "tls-cert", "tls-key"},
		use: "healthcheck", brief: "exit 0 when the local server answers on --http"},
	{name: "token", args: "create --user NAME [--role admin|member|guest] [--data DIR]",
		summary: "Make a token offline (the server stopped), creating the user when missing, and print it alone on stdout: the way back in when every admin token is lost.",
		example: "gatehouse token create --data ./data --user admin",
		use:     "token create", brief: "--user NAME [--role admin|member|guest]: make a token offline"},
	{name: "backup", args: "[--data DIR] FILE",
		summary: "Copy the data file to FILE, created with mode 0600 since it holds every token's hash and the pictures (the server stopped; a running server is backed up with GET /api/v1/backup).",
		example: "gatehouse backup --data ./data gatehouse-backup.db",
		use:     "backup FILE", brief: "copy the data file to FILE (server stopped; online: GET /api/v1/backup)"},
	{name: "restore", args: "[--data DIR] FILE",
		summary: "Check the backup FILE and make it the data file (the server stopped); the current data file is kept beside it.",
		example: "gatehouse restore --data ./data gatehouse-backup.db",
		use:     "restore FILE", brief: "replace the data file with the backup FILE (server stopped)"},
	{name: "export", args: "[--data DIR] [FILE]",
		summary: "Write the whole state as JSON to FILE (created with mode 0600) or to stdout (the server stopped).",
		example: "gatehouse export --data ./data state.json",
		use:     "export [FILE]", brief: "write the whole state as JSON to FILE or stdout"},
	{name: "import", args: "[--data DIR] FILE",
		summary: "Load a JSON export into an empty data dir.",
		example: "gatehouse import --data ./data2 state.json",
		use:     "import FILE", brief: "load a JSON export into an empty data dir"},
	{name: "check", args: "[--data DIR]",
		summary: "Check the whole data file (the server stopped); exit 1 if it is damaged.",
		example: "gatehouse check --data ./data",
		use:     "check", brief: "check the whole data file (server stopped); exit 1 if damaged"},
	{name: "compact", args: "[--data DIR]",
		summary: "Rewrite the data file without its free pages (the server stopped).",
		example: "gatehouse compact --data ./data",
		use:     "compact", brief: "rewrite the data file without its free pages (server stopped)"},
	{name: "version", summary: "Print the version (also gatehouse --version).", example: "gatehouse version",
		use: "version", brief: "print the version (also --version)"},
	{name: "help", args: "[COMMAND]", summary: "Describe a command: its arguments, flags and an example.", example: "gatehouse help backup",
		use: "help [COMMAND]", brief: "describe a command, its arguments and an example"},
}

func commandNamed(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// newFlagSet makes a command's flag set. It prints nothing itself:
// parseFlags reports an error once, and help on stdout.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("gatehouse "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses a command's flags. Asked for help, it prints it to out
// and returns flag.ErrHelp (which run reads as success); a wrong flag is
// one error, naming the flag as the docs write it, with a hint.
func parseFlags(fs *flag.FlagSet, name string, args []string, out io.Writer) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		if perr := printHelp(out, name, fs); perr != nil {
			return perr
		}
		return flag.ErrHelp
	}
	if err != nil {
		msg := strings.Replace(err.Error(), "flag provided but not defined: -", "unknown flag --", 1)
		for _, from := range []string{"for flag -", "argument: -"} {
			msg = strings.Replace(msg, from, from+"-", 1)
		}
		return hinted(errors.New(msg), name)
	}
	for _, a := range fs.Args() {
		if strings.HasPrefix(a, "-") && a != "-" {
			return hinted(fmt.Errorf("flag %s after an argument: flags come first", a), name)
		}
	}
	return nil
}

// hintError is a command line mistake followed by where to read more.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + "\n" + e.hint }
func (e *hintError) Unwrap() error { return e.err }

// hinted adds the help command to read to a command line mistake; name ""
// points at the overview.
func hinted(err error, name string) error {
	if name == "" {
		return &hintError{err, "run 'gatehouse help' for the commands"}
	}
	return &hintError{err, fmt.Sprintf("run 'gatehouse help %s' for its arguments and flags", name)}
}

// printHelp writes a command's help to w; name "" is the overview, which
// lists every command and the flags of serve.
func printHelp(w io.Writer, name string, fs *flag.FlagSet) error {
	var b strings.Builder
	c := commandNamed(name)
	if c == nil {
		b.WriteString("usage: gatehouse [COMMAND] [flags] [ARGS]\n\n")
		b.WriteString("Gatehouse is a smart-lock server: an MQTT broker, a REST API, a dashboard and one data file.\n\ncommands:\n")
		for _, c := range commands {
			fmt.Fprintf(&b, "  %-14s %s\n", c.use, c.brief)
		}
		b.WriteString("\nFlags come before arguments. 'gatehouse help COMMAND' describes one command.\n")
		b.WriteString("\nflags of serve, each also an environment variable (--log-level: GATEHOUSE_LOG_LEVEL):\n")
		c = commandNamed("serve")
	} else {
		fmt.Fprintf(&b, "usage: gatehouse %s %s\n\n%s\n\nexample:\n  %s\n", c.name, c.args, c.summary, c.example)
		if hasFlags(fs, c.flags) {
			b.WriteString("\nflags:\n")
		}
	}
	allEnv := c.name == "serve" || c.name == "healthcheck" // parseConfig's flags
	fs.VisitAll(func(f *flag.Flag) {
		if c.flags != nil && !slices.Contains(c.flags, f.Name) {
			return
		}
		typ, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if typ != "" {
			fmt.Fprintf(&b, " %s", typ)
		}
		fmt.Fprintf(&b, "\n        %s", usage)
		if f.DefValue != "" && f.DefValue != "false" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		if allEnv || f.Name == "data" {
			fmt.Fprintf(&b, " [%s]", "GATEHOUSE_"+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")))
		}
		b.WriteString("\n")
	})
	_, err := io.WriteString(w, b.String())
	return err
}

func hasFlags(fs *flag.FlagSet, only []string) bool {
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if only == nil || slices.Contains(only, f.Name) {
			n++
		}
	})
	return n > 0
}

// parseConfig reads flags for a command; every flag defaults to its
// GATEHOUSE_* environment variable. Flags come before arguments, and a flag
// after an argument is an error rather than silently ignored.
//
// Help (--help, -h) is written to out and returned as flag.ErrHelp; name ""
// is the overview of every command.
func parseConfig(name string, args []string, getenv func(string) string, out io.Writer) (config, error) {
	env := func(flagName, def string) string {
		if v := getenv("GATEHOUSE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))); v != "" {
			return v
		}
		return def
	}
	fs := newFlagSet(name)
	var cfg config
	fs.StringVar(&cfg.Data, "data", env("data", "./data"), "data directory (holds gatehouse.db)")
	fs.StringVar(&cfg.MQTT, "mqtt", env("mqtt", ":1883"), "MQTT TCP listen address")
	fs.StringVar(&cfg.HTTP, "http", env("http", ":8080"), "HTTP listen address (REST, MQTT over WebSocket at /mqtt)")
	fs.StringVar(&cfg.MQTTS, "mqtts", env("mqtts", ":8883"), "MQTT over TLS listen address (with --tls-cert and --tls-key)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", env("tls-cert", ""), "PEM certificate file: MQTT also listens with TLS and HTTP serves HTTPS (re-read on SIGHUP)")
	fs.StringVar(&cfg.TLSKey, "tls-key", env("tls-key", ""), "PEM private key file for --tls-cert")
	fs.StringVar(&cfg.LogLevel, "log-level", env("log-level", "info"), "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", env("log-format", "text"), "log lines as text (key=value) or json")
	fs.StringVar(&cfg.Metrics, "metrics", env("metrics", ""), "also serve /metrics here without authentication, for a scraper on a private network, like 127.0.0.1:9100 (/metrics on --http always takes an admin bearer)")
	ttl := fs.String("command-ttl", env("command-ttl", "30s"), "time to live of a command (at most 5m)")
	tz := fs.String("timezone", env("timezone", "Local"), "IANA time zone in which grant windows are read, like Europe/Paris")
	pictureMax := fs.Int("picture-max-mib", envInt(env("picture-max-mib", ""), 5), "largest picture accepted over HTTP, in MiB")
	fs.IntVar(&cfg.KeepPictures, "pictures-keep", envInt(env("pictures-keep", ""), actions.DefaultKeepPictures), "how many stranger pictures to keep; the oldest go first")
	fs.IntVar(&cfg.PictureMiB, "pictures-mib", envInt(env("pictures-mib", ""), actions.DefaultPictureBytes>>20), "how many MiB of stranger pictures to keep; the oldest go first")
	linkTTL := fs.String("link-ttl", env("link-ttl", "15m"), "how long a signed picture link works")
	keepEvents := fs.String("keep-events", env("keep-events", "90d"), "how long events (with their commands and pictures) are kept, like 90d or 36h; 0 for no age limit")
	fs.IntVar(&cfg.KeepEventsMax, "keep-events-max", envInt(env("keep-events-max", ""), actions.DefaultKeepEventsMax), "how many events are kept at most; the oldest go first")
	scripts, err := strconv.ParseBool(env("scripts", "false"))
	if err != nil {
		return cfg, fmt.Errorf("GATEHOUSE_SCRIPTS %q: want true or false", env("scripts", ""))
	}
	fs.BoolVar(&cfg.Scripts, "scripts", scripts, "run actions added at run time as Starlark scripts (docs/scripts.md)")
	lim := &cfg.MQTTLimits
	fs.IntVar(&lim.MaxConnections, "max-connections", envInt(env("max-connections", ""), broker.DefaultMaxConnections), "logged-in MQTT connections; past it new logins are refused (reconnects never)")
	fs.IntVar(&lim.MaxPending, "max-pending", envInt(env("max-pending", ""), broker.DefaultMaxPending), "MQTT connections not logged in yet, in total")
	fs.IntVar(&lim.MaxPendingPerAddress, "max-pending-per-address", envInt(env("max-pending-per-address", ""), broker.DefaultMaxPendingPerAddress), "MQTT connections not logged in yet, from one address")
	fs.IntVar(&lim.ConnectBurst, "connect-burst", envInt(env("connect-burst", ""), broker.DefaultConnectBurst), "new MQTT connections one address may open at once before --connect-rate applies")
	connectRate := fs.Float64("connect-rate", float64(envInt(env("connect-rate", ""), broker.DefaultConnectRate)), "new MQTT connections per second from one address")
	fs.IntVar(&lim.MaxSessionsPerUser, "max-sessions-per-user", envInt(env("max-sessions-per-user", ""), broker.DefaultMaxSessionsPerUser), "live MQTT connections of one person")
	fs.IntVar(&lim.MaxPersistentPerUser, "max-persistent-per-user", envInt(env("max-persistent-per-user", ""), broker.DefaultMaxPersistentPerUser), "MQTT sessions one person keeps after disconnecting")
	fs.IntVar(&lim.MessageBurst, "message-burst", envInt(env("message-burst", ""), broker.DefaultMessageBurst), "MQTT messages one device or person may send at once before --message-rate applies")
	rateFlag := fs.Float64("message-rate", float64(envInt(env("message-rate", ""), broker.DefaultMessageRate)), "MQTT messages per second one device or person may send")
	fs.IntVar(&cfg.MaxStreams, "max-streams-per-user", envInt(env("max-streams-per-user", ""), actions.DefaultMaxStreams), "live event streams (SSE) of one person")
	fs.IntVar(&cfg.MaxCommands, "max-commands", envInt(env("max-commands", ""), web.DefaultMaxCommands), "REST command requests in progress at once; more are answered 503 with Retry-After")
	fs.IntVar(&cfg.HTTPMaxConns, "http-max-connections", envInt(env("http-max-connections", ""), web.DefaultMaxConnections), "open HTTP connections in total")
	fs.IntVar(&cfg.HTTPMaxConnsPer, "http-max-per-address", envInt(env("http-max-per-address", ""), web.DefaultMaxConnectionsPerAddr), "open HTTP connections from one address")
	if err := parseFlags(fs, name, args, out); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, hinted(fmt.Errorf("%s takes no arguments, got %q", name, fs.Args()), name)
	}
	lim.MessageRate, lim.ConnectRate = *rateFlag, *connectRate
	if lim.MaxConnections < 1 || lim.MaxPending < 1 || lim.ConnectRate <= 0 || lim.ConnectBurst < 1 || lim.MaxPendingPerAddress < 1 || lim.MaxSessionsPerUser < 1 || lim.MaxPersistentPerUser < 1 ||
		lim.MessageBurst < 1 || lim.MessageRate <= 0 || cfg.HTTPMaxConns < 1 || cfg.HTTPMaxConnsPer < 1 || cfg.MaxStreams < 1 || cfg.MaxCommands < 1 {
		return cfg, errors.New("--max-connections, --max-pending, --connect-rate, --connect-burst, --max-pending-per-address, --max-sessions-per-user, --max-persistent-per-user, --message-rate, --message-burst, --http-max-connections, --http-max-per-address, --max-streams-per-user and --max-commands must be positive")
	}
	d, err := time.ParseDuration(*ttl)
	if err != nil || d < time.Second || d > actions.MaxCommandTTL {
		return cfg, fmt.Errorf("--command-ttl %q: want a duration from 1s to %s", *ttl, actions.MaxCommandTTL)
	}
	cfg.CommandTTL = d
	if cfg.LinkTTL, err = time.ParseDuration(*linkTTL); err != nil || cfg.LinkTTL < time.Second || cfg.LinkTTL > 7*24*time.Hour {
		return cfg, fmt.Errorf("--link-ttl %q: want a duration from 1s to 168h", *linkTTL)
	}
	if *pictureMax < 1 || *pictureMax > 64 || cfg.KeepPictures < 1 || cfg.PictureMiB < 1 {
		return cfg, errors.New("--picture-max-mib (1-64), --pictures-keep and --pictures-mib must be positive")
	}
	cfg.PictureMax = int64(*pictureMax) << 20
	if cfg.KeepEvents, err = actions.ParseAge(*keepEvents); err != nil || (cfg.KeepEvents != 0 && cfg.KeepEvents < actions.MinKeepEvents) {
		return cfg, fmt.Errorf("--keep-events %q: want 0 (no age limit), days like 90d, or a duration of at least 1h", *keepEvents)
	}
	if cfg.KeepEvents == 0 {
		cfg.KeepEvents = -1 // actions reads zero as the default
	}
	if cfg.KeepEventsMax < 1 {
		return cfg, fmt.Errorf("--keep-events-max %d: want a positive number", cfg.KeepEventsMax)
	}
	if cfg.Location, err = time.LoadLocation(*tz); err != nil {
		return cfg, fmt.Errorf("--timezone %q: %w", *tz, err)
	}
	if cfg.MQTT == "" || cfg.HTTP == "" {
		return cfg, errors.New("--mqtt and --http need an address (like 127.0.0.1:1883 to keep MQTT local)")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return cfg, errors.New("--tls-cert and --tls-key go together")
	}
	cfg.AdminToken = getenv("GATEHOUSE_ADMIN_TOKEN")
	return cfg, nil
}

// envInt reads a number from an environment value, def when empty or bad
// (a bad value is then reported by the flag's own parsing of the default).
func envInt(v string, def int) int {
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	return def
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// serve runs the server until ctx ends.
func serve(ctx context.Context, cfg config, stderr io.Writer) error {
	a, err := start(cfg, stderr)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			a.log.Info("shutting down")
			done = true
		case err = <-a.httpErr:
			a.log.Error("http server failed", "error", err)
			done = true
		case <-hup:
			if a.certs == nil {
				a.log.Info("SIGHUP ignored: no TLS certificate configured")
			} else if rerr := a.certs.load(); rerr != nil {
				a.log.Error("reload TLS certificate: keeping the old one", "error", rerr)
			} else {
				a.log.Info("TLS certificate reloaded")
			}
		}
	}
	err = errors.Join(err, a.close())
	a.log.Info("stopped", "error", err)
	return err
}

// app is a running server: store, service, broker and HTTP, started in that
// order and stopped in reverse.
type app struct {
	log    *slog.Logger
	db     *store.DB
	svc    *actions.Service
	broker *broker.Broker
	http   *http.Server
	httpLn net.Listener
	// mqttLn and mqttsLn are bound by start and handed to the broker.
	mqttLn, mqttsLn net.Listener
	httpErr         chan error
	certs           *certFiles // nil without TLS
	// metrics serves /metrics without authentication on --metrics; nil
	// without it.
	metrics   *http.Server
	metricsLn net.Listener
	// fresh holds the HTTP connections that have not sent a request yet.
	fresh freshConns
}

// metricsAddr is the bound --metrics address, "" without one.
func (a *app) metricsAddr() string {
	if a.metricsLn == nil {
		return ""
	}
	return a.metricsLn.Addr().String()
}

func start(cfg config, stderr io.Writer) (*app, error) {
	logger, err := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return nil, err
	}
	a := &app{log: logger, httpErr: make(chan error, 1)}
	metrics := web.NewMetrics()
	started := false
	var undo func() // removes the data file and dirs this start made
	defer func() {
		if !started {
			a.close() // undo what did start
			if undo != nil {
				undo()
			}
		}
	}()

	// Every port is bound before anything is created: a busy port (often
	// Mosquitto on 1883) leaves no data file and no admin behind.
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" {
		a.certs = &certFiles{cert: cfg.TLSCert, key: cfg.TLSKey}
		if err := a.certs.load(); err != nil {
			return nil, err
		}
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: a.certs.get}
	}
	if a.mqttLn, err = listen("mqtt", cfg.MQTT); err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		if a.mqttsLn, err = listen("mqtts", cfg.MQTTS); err != nil {
			return nil, err
		}
	}
	if a.httpLn, err = listen("http", cfg.HTTP); err != nil {
		return nil, err
	}
	if cfg.Metrics != "" {
		if a.metricsLn, err = listen("metrics", cfg.Metrics); err != nil {
			return nil, err
		}
	}

	if undo, err = makeDataDir(cfg.Data); err != nil {
		return nil, err
	}
	dataFile := filepath.Join(cfg.Data, "gatehouse.db")
	if a.db, err = store.OpenWith(dataFile,
		store.Options{Logger: logger.With("component", "store"), OnCommit: metrics.ObserveCommit}); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, dataDirError(cfg.Data, err)
		}
		return nil, err
	}
	a.svc, err = actions.New(actions.Config{Store: a.db, Logger: logger.With("component", "actions"),
		CommandTTL: cfg.CommandTTL, Location: cfg.Location, Now: cfg.now,
		KeepPictures: cfg.KeepPictures, PictureBytes: cfg.PictureMiB << 20, LinkTTL: cfg.LinkTTL,
		Scripts: cfg.Scripts, ScriptLimits: cfg.scriptLimits, MaxStreams: cfg.MaxStreams,
		KeepEvents: cfg.KeepEvents, KeepEventsMax: cfg.KeepEventsMax, Metrics: metrics})
	if err != nil {
		return nil, err
	}
	a.broker, err = broker.New(a.svc, broker.Options{Addr: cfg.MQTT, Listener: a.mqttLn, TLSListener: a.mqttsLn,
		Logger: logger.With("component", "broker"), ConnectTimeout: cfg.connectTimeout,
		TLS: tlsConfig, TLSAddr: cfg.MQTTS, MessageTTL: cfg.CommandTTL, Limits: cfg.MQTTLimits})
	if err != nil {
		return nil, err
	}
	a.svc.SetPublisher(a.broker)
	metrics.Watch(web.MetricsSources{
		Devices: a.svc.DeviceCounts,
		Streams: a.svc.Streams,
		MQTT: func() (int, uint64, uint64) {
			st := a.broker.Stats()
			return st.Connections, st.MessagesIn, st.MessagesOut
		},
		DataFileBytes: func() (int64, error) {
			fi, err := os.Stat(dataFile)
			if err != nil {
				return 0, err
			}
			return fi.Size(), nil
		},
	})
	if err := a.svc.Open(); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	a.svc.StartRetention()
	hadUsers := false
	if cfg.AdminToken != "" {
		err := a.db.View(func(tx actions.Tx) error {
			users, err := tx.Users()
			hadUsers = len(users) > 0
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("bootstrap admin: %w", err)
		}
	}
	token, err := a.svc.EnsureAdmin(cfg.AdminToken)
	if err != nil {
		return nil, fmt.Errorf("bootstrap admin: %w", err)
	}
	if hadUsers {
		// The variable only names the first admin's token: a newcomer who
		// sets it after a first start would otherwise get 401s and no clue.
		logger.Warn("GATEHOUSE_ADMIN_TOKEN is ignored: the data file already has users (it is used only on a first start)",
			"data_file", dataFile, "fix", "stop the server and run: gatehouse token create --data "+cfg.Data+" --user admin; or start over with an empty --data")
	}

	if err := a.broker.Listen(); err != nil {
		return nil, err
	}
	if err := a.broker.Serve(); err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	a.http = &http.Server{
		ConnState: a.fresh.track,
		Handler: web.NewHandler(a.svc, web.Options{
			Logger:        logger.With("component", "web"),
			MQTT:          a.broker.WebSocketHandler(),
			MaxPicture:    cfg.PictureMax,
			MaxCommands:   cfg.MaxCommands,
			Heartbeat:     cfg.heartbeat,
			UploadTimeout: cfg.uploadTimeout,
			Scripts:       cfg.Scripts,
			Location:      cfg.Location,
			Now:           cfg.now,
			Metrics:       metrics,
		}),
		// A client has 5 s for its headers and 30 s for its body; an idle
		// keep-alive connection is closed after 15 s, so idle connections
		// cannot pile up (docs/security.md). No WriteTimeout, since ?wait=
		// holds answers back on purpose. WebSocket connections set their
		// own deadlines.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       15 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
	a.http.TLSConfig = tlsConfig
	go func() {
		var err error
		ln := web.LimitListener(a.httpLn, cfg.HTTPMaxConns, cfg.HTTPMaxConnsPer)
		if tlsConfig != nil {
			err = a.http.ServeTLS(ln, "", "")
		} else {
			err = a.http.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			a.httpErr <- err
		}
	}()
	if a.metricsLn != nil {
		a.metrics = &http.Server{Handler: metrics.Handler(), ReadHeaderTimeout: 5 * time.Second,
			ErrorLog: slog.NewLogLogger(logger.With("component", "metrics").Handler(), slog.LevelWarn)}
		go func() {
			if err := a.metrics.Serve(a.metricsLn); !errors.Is(err, http.ErrServerClosed) {
				a.httpErr <- fmt.Errorf("metrics: %w", err)
			}
		}()
	}
	if token != "" { // printed once everything runs: a failed start made no admin
		fmt.Fprintf(stderr, "admin token: %s\n", token)
	}
	logger.Info("gatehouse started", "version", version, "mqtt", a.broker.Addr(), "mqtts", a.broker.TLSAddr(),
		"http", a.httpLn.Addr().String(), "https", tlsConfig != nil, "data", cfg.Data, "scripts", cfg.Scripts,
		"metrics", a.metricsAddr())
	started = true
	return a, nil
}

// close stops what start started, in reverse, each step with a deadline.
func (a *app) close() error {
	var errs []error
	if a.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if err := a.metrics.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop metrics: %w", err))
		}
		cancel()
	} else if a.metricsLn != nil {
		a.metricsLn.Close()
	}
	if a.http != nil {
		if a.svc != nil {
			a.svc.EndStreams() // SSE handlers return instead of holding Shutdown
		}
		if err := a.fresh.shutdown(a.http); err != nil {
			errs = append(errs, fmt.Errorf("stop http: %w", err))
		}
	} else if a.httpLn != nil {
		a.httpLn.Close()
	}
	if a.broker != nil {
		if err := a.broker.Close(shutdownTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ln := range []net.Listener{a.mqttLn, a.mqttsLn} {
		if ln != nil {
			ln.Close() // the broker's, closed already, or bound before a failure
		}
	}
	if a.svc != nil {
		a.svc.Close()
	}
	if a.db != nil {
		if err := a.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
	}
	return errors.Join(errs...)
}

// freshConns tracks HTTP connections that have not sent a request yet.
// http.Server.Shutdown waits up to 5 s for such a connection (a browser's
// preconnect, a client's spare dial) before treating it as idle, which is
// as long as our whole shutdown deadline: shutdown closes them itself.
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state == http.StateNew {
		if f.conns == nil {
			f.conns = map[net.Conn]struct{}{}
		}
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

// shutdown stops srv gracefully within shutdownTimeout, closing the
// connections that never sent a request as it goes.
func (f *freshConns) shutdown(srv *http.Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		f.mu.Lock()
		for c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		select {
		case err := <-done:
			return err
		case <-tick.C:
		}
	}
}

// healthcheck asks the local server's /healthz; for Docker's HEALTHCHECK.
// Over HTTPS the certificate is not checked: the question is only whether
// this machine's server answers.
func healthcheck(addr string, https bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--http %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme, client := "http", &http.Client{Timeout: 3 * time.Second}
	if https {
		scheme = "https"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	resp, err := client.Get(scheme + "://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s", resp.Status)
	}
	return nil
}

// certFiles is the TLS certificate, re-read from its files on SIGHUP so a
// renewed certificate is used without a restart.
type certFiles struct {
	cert, key string
	current   atomic.Pointer[tls.Certificate]
}

func (c *certFiles) load() error {
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	c.current.Store(&pair)
	return nil
}

func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current.Load(), nil
}

// tokenCreate is `gatehouse token create`: it works on the data file while
// no server holds it, to recover access when every admin token is lost.
func tokenCreate(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token")
	data := fs.String("data", getenv("GATEHOUSE_DATA"), "data directory (default ./data)")
	user := fs.String("user", "", "user name (created when missing)")
	role := fs.String("role", "", "admin, member or guest (default: admin for a new user, unchanged otherwise)")
	if err := parseFlags(fs, "token", args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return hinted(fmt.Errorf("token create takes no arguments, got %q", fs.Args()), "token")
	}
	if *user == "" {
		return hinted(errors.New("token create: --user is required"), "token")
	}
	if *data == "" {
		*data = "./data"
	}
	db, err := store.OpenWith(filepath.Join(*data, "gatehouse.db"), store.Options{MustExist: true})
	switch {
	case errors.Is(err, store.ErrNoStore):
		return noStore(*data)
	case errors.Is(err, store.ErrInUse):
		return fmt.Errorf("%w: stop the server first (a running server makes tokens with POST /api/v1/users/NAME/tokens)", err)
	case err != nil:
		return err
	}
	defer db.Close()
	svc, err := actions.New(actions.Config{Store: db})
	if err != nil {
		return err
	}
	token, err := svc.IssueToken(*user, *role)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}

// offline runs the commands that work on the data file while no server
// holds it: backup, restore, export and import. Each shows its progress on
// stderr and ends with a one-line summary there (stdout may be the export).
func offline(cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet(cmd)
	data := fs.String("data", getenv("GATEHOUSE_DATA"), "data directory (default ./data)")
	if err := parseFlags(fs, cmd, args, stdout); err != nil {
		return err
	}
	if *data == "" {
		*data = "./data"
	}
	path := filepath.Join(*data, "gatehouse.db")
	file := fs.Arg(0)
	want := 1
	if cmd == "export" {
		want = min(fs.NArg(), 1)
	}
	if fs.NArg() != want || (want == 1 && file == "") {
		return hinted(fmt.Errorf("usage: gatehouse %s %s", cmd, commandNamed(cmd).args), cmd)
	}
	began := time.Now()
	switch cmd {
	case "restore": // creates the data dir, and works on a damaged data file
		size := fileSize(file)
		// The backup is checked first, then copied beside the data file.
		p := startProgress(stderr, "restore", size, tempSize(*data, ".gatehouse.db.restoring.tmp-*"))
		kept, err := store.Restore(path, file)
		p.stop()
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "restore: %s from %s is now %s (took %s)\n", shortSize(size), file, path, took(began))
		if kept != "" {
			fmt.Fprintln(stderr, "previous data file kept as", kept)
		}
		return nil
	case "import":
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		undo, err := makeDataDir(*data)
		if err != nil {
			return err
		}
		in := &countingReader{r: f}
		p := startProgress(stderr, "import", fileSize(file), in.n.Load)
		err = store.Import(path, in)
		p.stop()
		if err != nil {
			undo() // the data dir, if import made it
			return err
		}
		fmt.Fprintf(stderr, "import: %s of JSON from %s into %s (%s) (took %s)\n",
			shortSize(in.n.Load()), file, path, shortSize(fileSize(path)), took(began))
		return nil
	}
	db, err := store.OpenWith(path, store.Options{MustExist: true})
	switch {
	case errors.Is(err, store.ErrNoStore):
		return noStore(*data)
	case errors.Is(err, store.ErrInUse):
		return fmt.Errorf("%w: stop the server first (a running server is backed up with GET /api/v1/backup)", err)
	case err != nil:
		return err
	}
	defer db.Close()
	if cmd == "backup" {
		// Written through a temporary file beside FILE, renamed when whole.
		p := startProgress(stderr, "backup", fileSize(path), tempSize(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*"))
		err := db.BackupFile(file)
		p.stop()
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		fmt.Fprintf(stderr, "backup: %s of %s written to %s, mode 0600 (took %s)\n", shortSize(fileSize(file)), path, file, took(began))
		return nil
	}
	// An export holds every token's hash, device secrets' hashes and the
	// pictures: the file is made 0600 before anything is written to it.
	out, where := stdout, "stdout"
	var f *os.File
	if file != "" {
		if f, err = os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		out, where = f, file+" (mode 0600)"
	}
	w := &countingWriter{w: out}
	p := startProgress(stderr, "export", 0, w.n.Load)
	err = db.Export(w)
	p.stop()
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(file) // no half export left behind
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "export: %s of JSON from %s written to %s (took %s)\n", shortSize(w.n.Load()), path, where, took(began))
	return nil
}

// progressEvery is how often progress is shown: in place on a terminal,
// as a new line in a log.
const (
	progressEveryTTY = 250 * time.Millisecond
	progressEveryLog = 10 * time.Second
)

// progress shows a long offline command's progress on stderr until stop.
type progress struct {
	stopc, done chan struct{}
}

// startProgress reports what has been done (done, in bytes) of total
// (0 when unknown): on a terminal one line rewritten in place, otherwise
// a line every progressEveryLog, so that a log is not flooded.
func startProgress(w io.Writer, what string, total int64, done func() int64) *progress {
	p := &progress{stopc: make(chan struct{}), done: make(chan struct{})}
	tty := isTerminal(w)
	every := progressEveryLog
	if tty {
		every = progressEveryTTY
	}
	began := time.Now()
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		shown := false
		for {
			select {
			case <-p.stopc:
				if shown && tty {
					fmt.Fprint(w, "\r\x1b[K") // the summary takes the line
				}
				return
			case <-t.C:
				line := progressLine(what, done(), total, time.Since(began))
				if tty {
					fmt.Fprint(w, "\r"+line+"\x1b[K")
				} else {
					fmt.Fprintln(w, line)
				}
				shown = true
			}
		}
	}()
	return p
}

func (p *progress) stop() {
	close(p.stopc)
	<-p.done
}

func progressLine(what string, done, total int64, elapsed time.Duration) string {
	at := elapsed.Round(time.Second)
	switch {
	case done == 0:
		return fmt.Sprintf("%s: reading and checking…, %s", what, at)
	case total > 0:
		return fmt.Sprintf("%s: %s of %s (%d%%), %s", what, shortSize(done), shortSize(total), min(100, done*100/total), at)
	}
	return fmt.Sprintf("%s: %s, %s", what, shortSize(done), at)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// tempSize is the size of the temporary files matching pattern in dir:
// how far a store function that writes through one has got.
func tempSize(dir, pattern string) func() int64 {
	return func() int64 {
		names, _ := filepath.Glob(filepath.Join(dir, pattern))
		var n int64
		for _, name := range names {
			n += fileSize(name)
		}
		return n
	}
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func took(began time.Time) time.Duration {
	return time.Since(began).Round(time.Millisecond)
}

// shortSize writes a size for a progress or summary line.
func shortSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d bytes", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

// countingWriter and countingReader count bytes for the progress line,
// which reads the count from another goroutine.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// noStore is the error of an offline command pointed at a data dir without
// a store: it never makes one, since an empty store there would hide a
// wrong --data.
func noStore(dir string) error {
	return fmt.Errorf("no data file in %s (%s is missing): check --data or GATEHOUSE_DATA; the server makes a new store on its first start",
		dir, filepath.Join(dir, "gatehouse.db"))
}

// maintain runs `gatehouse check` and `gatehouse compact` on the data file
// while no server holds it.
func maintain(cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet(cmd)
	data := fs.String("data", getenv("GATEHOUSE_DATA"), "data directory (default ./data)")
	if err := parseFlags(fs, cmd, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return hinted(fmt.Errorf("usage: gatehouse %s [--data DIR] (got %q)", cmd, fs.Args()), cmd)
	}
	if *data == "" {
		*data = "./data"
	}
	path := filepath.Join(*data, "gatehouse.db")
	restore := fmt.Sprintf("restore a backup with: gatehouse restore --data %s FILE", *data)
	inUse := func(err error) error {
		return fmt.Errorf("%w: stop the server first", err)
	}
	if cmd == "compact" {
		before, after, err := store.Compact(path)
		switch {
		case errors.Is(err, store.ErrNoStore):
			return noStore(*data)
		case errors.Is(err, store.ErrInUse):
			return inUse(err)
		case errors.Is(err, store.ErrDamaged):
			return fmt.Errorf("compact: data file %w; nothing was changed; %s", err, restore)
		case err != nil:
			return err
		}
		fmt.Fprintf(stdout, "compacted %s: %s → %s\n", path, sizeText(before), sizeText(after))
		return nil
	}
	r, err := store.Check(path)
	switch {
	case errors.Is(err, store.ErrNoStore):
		return noStore(*data)
	case errors.Is(err, store.ErrInUse):
		return inUse(err)
	case err != nil:
		return err
	}
	if len(r.Problems) > 0 {
		for _, p := range r.Problems {
			fmt.Fprintf(stdout, "%s: %s\n", path, p)
		}
		return fmt.Errorf("check: data file %s is damaged (%s listed above); %s", path, plural(len(r.Problems), "problem"), restore)
	}
	fmt.Fprintf(stdout, "ok %s: %s, %d pages of %d bytes (%d free), schema version %d\n",
		path, sizeText(r.Size), r.Pages, r.PageSize, r.FreePages, r.Schema)
	return nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// sizeText writes a file size for people, with the exact byte count.
func sizeText(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB (%d bytes)", float64(n)/(1<<10), n)
	}
	return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n)
}

// listen binds one of the server's ports; name is its flag. A busy port
// says which flag and variable move it.
func listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	variable := "GATEHOUSE_" + strings.ToUpper(name)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint := ""
		if _, port, _ := net.SplitHostPort(addr); name == "mqtt" && port == "1883" {
			hint = " (often Mosquitto or another MQTT broker: stop it, or use --mqtt :1884)"
		}
		return nil, fmt.Errorf("%s listen on %s: the port is in use by another program%s; choose a free address with --%s or %s",
			name, addr, hint, name, variable)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("%s listen on %s: %w: ports below 1024 need privileges; choose another with --%s or %s",
			name, addr, err, name, variable)
	}
	return nil, fmt.Errorf("%s listen on %s: %w; check --%s or %s", name, addr, err, name, variable)
}

// makeDataDir creates the data dir when missing and returns the undo of a
// failed start: it removes the data file if this start made it, and the
// directories it created, so that a failed first start leaves nothing.
func makeDataDir(dir string) (undo func(), err error) {
	dir = filepath.Clean(dir)
	created := "" // the topmost directory MkdirAll makes
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		created = d
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, dataDirError(dir, err)
	}
	file := filepath.Join(dir, "gatehouse.db")
	_, err = os.Stat(file)
	newFile := errors.Is(err, fs.ErrNotExist)
	return func() {
		if newFile {
			os.Remove(file)
		}
		for d := dir; created != ""; d = filepath.Dir(d) {
			if os.Remove(d) != nil || d == created {
				break // not empty, or the last one this start made
			}
		}
	}, nil
}

// dataDirError explains a data dir the server cannot use; when it is a
// matter of permissions it names the user the server runs as.
func dataDirError(dir string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	who := fmt.Sprintf("uid %d", os.Geteuid())
	if u, uerr := user.Current(); uerr == nil && u.Username != "" {
		who = fmt.Sprintf("user %s (%s)", u.Username, who)
	}
	return fmt.Errorf("data dir %s: %w: the server runs as %s, who cannot write there; give it the directory (chown) or choose another with --data or GATEHOUSE_DATA",
		dir, err, who)
}
