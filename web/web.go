// Package web serves the REST API, the prototype's routes and MQTT over
// WebSocket, with Echo. Every route is in routes; handlers return errors
// and one error handler turns them into JSON.
package web

import (
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"gatehouse/actions"
)

// Wait bounds for ?wait= on command routes.
const (
	defaultWait = 5 * time.Second
	maxWait     = 60 * time.Second
)

// Options configures the handler.
type Options struct {
	Logger *slog.Logger
	// MaxCommands bounds the command requests in progress at once (each
	// may wait for its device's answer); past it they are shed with 503
	// and Retry-After (default DefaultMaxCommands).
	MaxCommands int
	// MQTT serves MQTT over WebSocket at /mqtt; nil leaves /mqtt out.
	MQTT http.Handler
	// MaxPicture caps an uploaded picture (default 5 MiB).
	MaxPicture int64
	// UploadTimeout bounds the time to send a picture's body (default
	// 30 s, DefaultUploadTimeout).
	UploadTimeout time.Duration
	// Heartbeat is the interval of SSE heartbeats (default 15 s).
	Heartbeat time.Duration
	// Scripts shows the dashboard's scripts page (the server runs scripts).
	Scripts bool
	// Location is the time zone the dashboard shows and reads times in
	// (default Local): the one grant windows are read in.
	Location *time.Location
	// Now is the dashboard's clock (default time.Now): the service's.
	Now func() time.Time
	// Metrics serves /metrics to admins (web/metrics.go); nil leaves it
	// out.
	Metrics *Metrics
}

type server struct {
	svc        *actions.Service
	log        *slog.Logger
	mqtt       http.Handler
	echo       *echo.Echo
	maxPicture int64
	heartbeat  time.Duration
	dash       *dashboard
	// uploadTimeout bounds the body of a picture upload.
	uploadTimeout time.Duration
	// commands holds a token per command request in progress (shed).
	commands chan struct{}
	// shedN counts commands refused at that bound since the last log line
	// about them; shedLogging is set while such lines are due (shedOne).
	shedN       atomic.Int64
	shedLogging atomic.Bool
	// metrics serves /metrics; nil without Options.Metrics.
	metrics http.Handler
}

// NewHandler returns the HTTP handler of Gatehouse.
func NewHandler(svc *actions.Service, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// The address that counts for throttling is the peer's: headers such as
	// X-Forwarded-For are the client's to forge.
	e.IPExtractor = echo.ExtractIPDirect()
	if opts.MaxPicture <= 0 {
		opts.MaxPicture = actions.DefaultMaxPicture
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	s := &server{svc: svc, log: opts.Logger, mqtt: opts.MQTT, echo: e, maxPicture: opts.MaxPicture, heartbeat: opts.Heartbeat,
		commands: make(chan struct{}, cmp.Or(opts.MaxCommands, DefaultMaxCommands))}
	s.dash = newDashboard(opts)
	if opts.Metrics != nil {
		s.metrics = opts.Metrics.Handler()
	}
	s.uploadTimeout = opts.UploadTimeout
	if s.uploadTimeout <= 0 {
		s.uploadTimeout = DefaultUploadTimeout
	}
	e.HTTPErrorHandler = s.handleError
	// HandleError: the error handler writes the answer before the line is
	// logged, so the line has the status actually sent. The path only: a
	// query may hold a picture link's signature.
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogMethod: true, LogURIPath: true, LogStatus: true, LogLatency: true, LogRemoteIP: true,
		HandleError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			level := slog.LevelInfo
			if v.Status < 400 && (v.URIPath == "/healthz" || v.URIPath == "/readyz") {
				level = slog.LevelDebug // probes, every few seconds
			}
			s.log.Log(c.Request().Context(), level, "http request", "method", v.Method, "path", v.URIPath,
				"status", v.Status, "latency", v.Latency, "remote", v.RemoteIP)
			return nil
		},
	}))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, DisablePrintStack: true}))
	s.routes()
	return e
}

func (s *server) routes() {
	e := s.echo
	e.GET("/hello", s.handleHello)
	e.GET("/healthz", s.handleHealth)
	e.GET("/readyz", s.handleReady)
	if s.metrics != nil {
		e.GET("/metrics", s.handleMetrics, s.authenticate)
	}
	// Public, outside the authenticated group (web/openapi.json).
	e.GET("/api/v1/openapi.json", s.handleOpenAPI)
	if s.mqtt != nil {
		e.GET("/mqtt", echo.WrapHandler(s.mqtt))
	}

	// Route middleware, not a group on "": a group would catch every
	// unknown path and answer 401 instead of 404.
	small := middleware.BodyLimit("64K")
	e.POST("/lock", s.handleLockAll, s.authenticate, small, s.shed)
	e.POST("/unlock", s.handleLockAll, s.authenticate, small, s.shed)
	e.POST("/test", s.handleTest, s.authenticate, small)
	e.GET("/get_pic", s.handleLatestPicture, s.authenticate)
	e.POST("/upload", s.handleStrangerUpload, s.authenticateDevice)
	e.POST("/api/v1/strangers", s.handleStrangerUpload, s.authenticateDevice)
	// Bearer or signed link: the handler checks which.
	e.GET("/api/v1/strangers/:id/picture", s.handlePicture)

	api := e.Group("/api/v1", s.authenticate, small)
	api.GET("/devices", s.handleDeviceList)
	api.POST("/devices", s.handleDeviceCreate)
	api.GET("/devices/:id", s.handleDeviceGet)
	api.PATCH("/devices/:id", s.handleDevicePatch)
	api.DELETE("/devices/:id", s.handleDeviceDelete)
	api.POST("/devices/:id/:verb", s.handleDeviceCommand, s.shed)
	api.GET("/commands/:id", s.handleCommandGet)
	api.POST("/lock", s.handleLockAll, s.shed)
	api.POST("/unlock", s.handleLockAll, s.shed)
	api.GET("/events", s.handleEventList)
	api.GET("/events/stream", s.handleEventStream)
	api.GET("/strangers", s.handleStrangerList)
	api.GET("/users", s.handleUserList)
	api.POST("/users", s.handleUserCreate)
	api.DELETE("/users/:name", s.handleUserDelete)
	api.GET("/users/:name/tokens", s.handleTokenList)
	api.POST("/users/:name/tokens", s.handleTokenCreate)
	api.DELETE("/tokens/:id", s.handleTokenDelete)
	api.GET("/grants", s.handleGrantList)
	api.POST("/grants", s.handleGrantCreate)
	api.DELETE("/grants/:id", s.handleGrantDelete)
	api.POST("/pairings", s.handlePairingCreate)
	api.GET("/actions", s.handleScriptList)
	api.GET("/actions/:name", s.handleScriptGet)
	api.PUT("/actions/:name", s.handleScriptPut)
	api.DELETE("/actions/:name", s.handleScriptDelete)
	api.GET("/backup", s.handleBackup)
	api.GET("/status", s.handleStatus)

	// The dashboard (web/dashboard*.go, docs/dashboard.md): static files
	// and the sign-in page are public; pages and the script's /ui/ calls
	// need a session cookie, and every post its CSRF token.
	e.GET("/static/*", s.handleStatic)
	e.GET("/manifest.webmanifest", s.handleStatic)
	e.GET("/signin", s.handleSigninPage)
	e.POST("/signin", s.handleSignin, small)
	e.POST("/signout", s.handleSignout, small, s.withSession)
	e.GET("/", s.handleDoors, s.withSession)
	e.GET("/devices/:id", s.handleDevicePage, s.withSession)
	e.POST("/devices/:id/rename", s.handleDeviceRename, small, s.withSession)
	e.POST("/devices/:id/delete", s.handleDeviceRemove, small, s.withSession)
	e.GET("/activity", s.handleActivity, s.withSession)
	e.GET("/pictures", s.handlePictures, s.withSession)
	e.GET("/people", s.handlePeople, s.withSession)
	e.POST("/people/users", s.handleUserAdd, small, s.withSession)
	e.POST("/people/users/:name/delete", s.handleUserRemove, small, s.withSession)
	e.POST("/people/users/:name/tokens", s.handleTokenAdd, small, s.withSession)
	e.POST("/people/tokens/:id/revoke", s.handleTokenRevoke, small, s.withSession)
	e.POST("/people/grants", s.handleGrantAdd, small, s.withSession)
	e.POST("/people/grants/:id/delete", s.handleGrantRemove, small, s.withSession)
	e.POST("/people/pairings", s.handlePairingAdd, small, s.withSession)
	e.GET("/scripts", s.handleScriptsPage, s.withSession)
	e.GET("/scripts/:name", s.handleScriptPage, s.withSession)
	e.POST("/scripts", s.handleScriptUpload, small, s.withSession)
	e.POST("/scripts/:name/delete", s.handleScriptRemove, small, s.withSession)
	e.GET("/backup", s.handleBackupPage, s.withSession)
	e.GET("/backup/download", s.handleDashBackup, s.withSession)
	e.GET("/ui/session", s.handleSessionCheck, s.withSession)
	e.GET("/ui/events", s.handleDashboardStream, s.withSession)
	e.GET("/ui/devices/:id/card", s.handleDeviceRow, s.withSession)
	e.POST("/ui/devices/:id/:verb", s.handleDashCommand, small, s.withSession)
	e.GET("/ui/commands/:id", s.handleDashCommandGet, s.withSession)
	e.GET("/ui/pictures", s.handleDashPictures, s.withSession)
	e.POST("/ui/lock", s.handleDashLockAll, small, s.withSession)
	e.POST("/ui/unlock", s.handleDashLockAll, small, s.withSession)
}

const principalKey = "principal"

// authenticate admits requests with a valid "Authorization: Bearer" token.
func (s *server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// The scheme is case-insensitive (RFC 9110 §11.1): "bearer" too.
		scheme, token, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
		if token = strings.TrimSpace(token); !strings.EqualFold(scheme, "Bearer") || token == "" {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="gatehouse"`)
			return actions.Errorf(actions.EUnauthorized, "missing bearer token")
		}
		p, err := s.svc.AuthenticateBearer(token, c.Request().RemoteAddr)
		if err != nil {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="gatehouse", error="invalid_token"`)
			return err
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

func principal(c echo.Context) actions.Principal {
	p, _ := c.Get(principalKey).(actions.Principal)
	return p
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

var statusOf = map[string]int{
	actions.EInvalid:      http.StatusBadRequest,
	actions.EUnauthorized: http.StatusUnauthorized,
	actions.EForbidden:    http.StatusForbidden,
	actions.ENotFound:     http.StatusNotFound,
	actions.EConflict:     http.StatusConflict,
	actions.EUnavailable:  http.StatusServiceUnavailable,
	actions.ETooMany:      http.StatusTooManyRequests,
	actions.EBusy:         http.StatusServiceUnavailable,
	actions.EInternal:     http.StatusInternalServerError,
	actions.EStorageFull:  http.StatusInsufficientStorage,
	actions.EStorage:      http.StatusServiceUnavailable,
}

// retryAfter is the Retry-After (seconds) of answers to writes the data
// file could not take: the server recovers by itself once it can write
// again, so the same request may be sent again.
var retryAfter = map[string]string{
	actions.EStorageFull: "30",
	actions.EStorage:     "10",
	actions.EBusy:        "1",
}

var codeOf = map[int]string{
	http.StatusBadRequest:            actions.EInvalid,
	http.StatusUnauthorized:          actions.EUnauthorized,
	http.StatusForbidden:             actions.EForbidden,
	http.StatusNotFound:              actions.ENotFound,
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusRequestEntityTooLarge: "too_large",
	http.StatusRequestTimeout:        "timeout",
	http.StatusUnsupportedMediaType:  actions.EInvalid,
	http.StatusServiceUnavailable:    actions.EUnavailable,
	http.StatusTooManyRequests:       actions.ETooMany,
	http.StatusInsufficientStorage:   actions.EStorageFull,
}

// handleError writes every error as {"error":{"code","message"}}. Only the
// message of an actions.Error reaches the client; other errors are logged
// and answered as internal.
func (s *server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var body errorBody
	status := http.StatusInternalServerError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		status = he.Code
		body.Error.Code = codeOf[status]
		if body.Error.Code == "" {
			body.Error.Code = actions.EInternal
		}
		body.Error.Message = strings.ToLower(http.StatusText(status))
		if m, ok := he.Message.(string); ok && status < 500 && m != http.StatusText(status) {
			body.Error.Message = m
		}
	default:
		body.Error.Code = actions.ErrorCode(err)
		body.Error.Message = actions.ErrorMessage(err)
		status = statusOf[body.Error.Code]
		if v, ok := retryAfter[body.Error.Code]; ok {
			c.Response().Header().Set(echo.HeaderRetryAfter, v)
		}
	}
	switch {
	case actions.IsStorageFailure(err), actions.ErrorCode(err) == actions.EBusy:
		// The store logs failing writes once per interval, shed reports
		// its refusals once per interval; a line per request would repeat
		// them thousands of times a minute.
		s.log.Debug("http request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "error", err)
	case status >= 500:
		s.log.Error("http request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "error", err)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, body)
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors a client can read.
func decode(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "request body too large")
		}
		if errors.Is(err, io.EOF) {
			return actions.Errorf(actions.EInvalid, "request body must be a JSON object")
		}
		return actions.Errorf(actions.EInvalid, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return actions.Errorf(actions.EInvalid, "invalid JSON body: trailing data")
	}
	return nil
}

// list is the shape of every list answer.
type list[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next"`
}

// pageParams reads ?limit= (1..1000, default 50) and ?cursor=.
func pageParams(c echo.Context) (limit int, cursor string, err error) {
	limit = 50
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return 0, "", actions.Errorf(actions.EInvalid, "limit must be a number from 1 to 1000")
		}
		limit = n
	}
	return limit, c.QueryParam("cursor"), nil
}

func (s *server) handleHello(c echo.Context) error { return c.String(http.StatusOK, "hello") }

func (s *server) handleHealth(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady answers 200 while the store answers and its last write
// committed, and 503 otherwise, with the reason: a full disk answers
// {"error":{"code":"storage_full","message":"the server cannot write to its
// data file: no space left on device (writes failing since …, N failed)"}}.
func (s *server) handleReady(c echo.Context) error {
	err := s.svc.Ready()
	if err == nil {
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	}
	var body errorBody
	body.Error.Code, body.Error.Message = actions.ErrorCode(err), actions.ErrorMessage(err)
	if !actions.IsStorageFailure(err) {
		s.log.Error("not ready", "error", err)
		body.Error.Code, body.Error.Message = actions.EUnavailable, "store not ready"
	}
	return c.JSON(http.StatusServiceUnavailable, body)
}
