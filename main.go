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
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
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
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		cfg, err := parseConfig("serve", args, getenv, stderr)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stderr)
	case "healthcheck":
		cfg, err := parseConfig("healthcheck", args, getenv, stderr)
		if err != nil {
			return err
		}
		return healthcheck(cfg.HTTP, cfg.TLSCert != "")
	case "token":
		if len(args) == 0 || args[0] != "create" {
			return errors.New("usage: gatehouse token create --user NAME [--role admin|member|guest]")
		}
		return tokenCreate(args[1:], getenv, stdout, stderr)
	case "version":
		if _, err := parseConfig("version", args, getenv, stderr); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "gatehouse", version)
		return nil
	case "help":
		_, err := parseConfig("serve", []string{"-h"}, getenv, stdout)
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	case "backup", "restore", "export", "import":
		return offline(cmd, args, getenv, stdout, stderr)
	case "check", "compact":
		return maintain(cmd, args, getenv, stdout, stderr)
	}
	return fmt.Errorf("unknown command %q (try: gatehouse help)", cmd)
}

const usage = `usage: gatehouse [COMMAND] [flags] [ARGS]

commands:
  serve        run the server (the default)
  healthcheck  exit 0 when the local server answers on --http
  token create --user NAME [--role admin|member|guest]
               make a token offline (prints it alone on stdout)
  backup FILE  copy the data file to FILE (server stopped; online: GET /api/v1/backup)
  restore FILE replace the data file with the backup FILE (server stopped)
  export [FILE] write the whole state as JSON to FILE or stdout
  import FILE  load a JSON export into an empty data dir
  check        check the whole data file (server stopped); exit 1 if damaged
  compact      rewrite the data file without its free pages (server stopped)
  version      print the version

flags (each also an environment variable GATEHOUSE_<NAME>):`

// parseConfig reads flags for a command; every flag defaults to its
// GATEHOUSE_* environment variable. Flags come before arguments, and a flag
// after an argument is an error rather than silently ignored.
func parseConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(flagName, def string) string {
		if v := getenv("GATEHOUSE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("gatehouse "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.Data, "data", env("data", "./data"), "data directory (holds gatehouse.db)")
	fs.StringVar(&cfg.MQTT, "mqtt", env("mqtt", ":1883"), "MQTT TCP listen address")
	fs.StringVar(&cfg.HTTP, "http", env("http", ":8080"), "HTTP listen address (REST, MQTT over WebSocket at /mqtt)")
	fs.StringVar(&cfg.MQTTS, "mqtts", env("mqtts", ":8883"), "MQTT over TLS listen address (with --tls-cert and --tls-key)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", env("tls-cert", ""), "PEM certificate file: MQTT also listens with TLS and HTTP serves HTTPS (re-read on SIGHUP)")
	fs.StringVar(&cfg.TLSKey, "tls-key", env("tls-key", ""), "PEM private key file for --tls-cert")
	fs.StringVar(&cfg.LogLevel, "log-level", env("log-level", "info"), "debug, info, warn or error")
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
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	for _, a := range fs.Args() {
		if strings.HasPrefix(a, "-") {
			return cfg, fmt.Errorf("flag %s after an argument: flags come first", a)
		}
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%s takes no arguments, got %q", name, fs.Args())
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

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
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
	log     *slog.Logger
	db      *store.DB
	svc     *actions.Service
	broker  *broker.Broker
	http    *http.Server
	httpLn  net.Listener
	httpErr chan error
	certs   *certFiles // nil without TLS
}

func start(cfg config, stderr io.Writer) (*app, error) {
	logger, err := newLogger(cfg.LogLevel, stderr)
	if err != nil {
		return nil, err
	}
	a := &app{log: logger, httpErr: make(chan error, 1)}
	started := false
	defer func() {
		if !started {
			a.close() // undo what did start
		}
	}()

	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if a.db, err = store.OpenWith(filepath.Join(cfg.Data, "gatehouse.db"),
		store.Options{Logger: logger.With("component", "store")}); err != nil {
		return nil, err
	}
	a.svc, err = actions.New(actions.Config{Store: a.db, Logger: logger.With("component", "actions"),
		CommandTTL: cfg.CommandTTL, Location: cfg.Location, Now: cfg.now,
		KeepPictures: cfg.KeepPictures, PictureBytes: cfg.PictureMiB << 20, LinkTTL: cfg.LinkTTL,
		Scripts: cfg.Scripts, ScriptLimits: cfg.scriptLimits, MaxStreams: cfg.MaxStreams,
		KeepEvents: cfg.KeepEvents, KeepEventsMax: cfg.KeepEventsMax})
	if err != nil {
		return nil, err
	}
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" {
		a.certs = &certFiles{cert: cfg.TLSCert, key: cfg.TLSKey}
		if err := a.certs.load(); err != nil {
			return nil, err
		}
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: a.certs.get}
	}
	a.broker, err = broker.New(a.svc, broker.Options{Addr: cfg.MQTT,
		Logger: logger.With("component", "broker"), ConnectTimeout: cfg.connectTimeout,
		TLS: tlsConfig, TLSAddr: cfg.MQTTS, MessageTTL: cfg.CommandTTL, Limits: cfg.MQTTLimits})
	if err != nil {
		return nil, err
	}
	a.svc.SetPublisher(a.broker)
	if err := a.svc.Open(); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	a.svc.StartRetention()
	token, err := a.svc.EnsureAdmin(cfg.AdminToken)
	if err != nil {
		return nil, fmt.Errorf("bootstrap admin: %w", err)
	}
	if token != "" {
		fmt.Fprintf(stderr, "admin token: %s\n", token)
	}

	if err := a.broker.Listen(); err != nil {
		return nil, err
	}
	if a.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, fmt.Errorf("http listen on %s: %w", cfg.HTTP, err)
	}
	if err := a.broker.Serve(); err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	a.http = &http.Server{
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
	logger.Info("gatehouse started", "version", version, "mqtt", a.broker.Addr(), "mqtts", a.broker.TLSAddr(),
		"http", a.httpLn.Addr().String(), "https", tlsConfig != nil, "data", cfg.Data, "scripts", cfg.Scripts)
	started = true
	return a, nil
}

// close stops what start started, in reverse, each step with a deadline.
func (a *app) close() error {
	var errs []error
	if a.http != nil {
		if a.svc != nil {
			a.svc.EndStreams() // SSE handlers return instead of holding Shutdown
		}
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if err := a.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop http: %w", err))
		}
		cancel()
	} else if a.httpLn != nil {
		a.httpLn.Close()
	}
	if a.broker != nil {
		if err := a.broker.Close(shutdownTimeout); err != nil {
			errs = append(errs, err)
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
	fs := flag.NewFlagSet("gatehouse token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", getenv("GATEHOUSE_DATA"), "data directory (default ./data)")
	user := fs.String("user", "", "user name (created when missing)")
	role := fs.String("role", "", "admin, member or guest (default: admin for a new user, unchanged otherwise)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token create takes no arguments, got %q", fs.Args())
	}
	if *user == "" {
		return errors.New("token create: --user is required")
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
// holds it: backup, restore, export and import.
func offline(cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gatehouse "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", getenv("GATEHOUSE_DATA"), "data directory (default ./data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, a := range fs.Args() {
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("flag %s after an argument: flags come first", a)
		}
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
		return fmt.Errorf("usage: gatehouse %s [--data DIR] FILE", cmd)
	}
	switch cmd {
	case "restore": // creates the data dir, and works on a damaged data file
		kept, err := store.Restore(path, file)
		if err != nil {
			return err
		}
		if kept != "" {
			fmt.Fprintln(stderr, "previous data file kept as", kept)
		}
		return nil
	case "import":
		if err := os.MkdirAll(*data, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		return store.Import(path, f)
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
	switch {
	case cmd == "backup":
		return db.BackupFile(file)
	case file == "":
		return db.Export(stdout)
	}
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := db.Export(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
	fs := flag.NewFlagSet("gatehouse "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", getenv("GATEHOUSE_DATA"), "data directory (default ./data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("usage: gatehouse %s [--data DIR] (got %q)", cmd, fs.Args())
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
