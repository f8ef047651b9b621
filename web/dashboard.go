package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// The dashboard (docs/dashboard.md) is server-rendered html/template pages
// with a little JavaScript, embedded in the binary. A person signs in with
// their name and an API token; the browser then holds only a random session
// id in an HttpOnly, SameSite=Strict cookie. Every request of a session
// checks its token again with actions.Service.AuthenticateBearer, so a
// revoked or expired token or a deleted user ends the session at once, and
// every page and action calls the same Service methods as REST.

//go:embed ui
var uiFiles embed.FS

const (
	sessionCookie = "gatehouse_session"
	csrfHeader    = "X-CSRF-Token"
	csrfField     = "csrf"
	// Sessions end after sessionIdle without a request and sessionMax
	// after sign-in, whichever comes first. At most maxSessions are held,
	// and maxUserSessions per person: past either, the oldest goes.
	sessionIdle     = 12 * time.Hour
	sessionMax      = 7 * 24 * time.Hour
	maxSessions     = 10_000
	maxUserSessions = 32
)

// session is one signed-in browser. The token stays in server memory so
// that each request can be authenticated exactly like a REST request; it
// never goes back to the browser.
type session struct {
	id      string
	token   string
	user    string
	tokenID string
	csrf    string
	created time.Time
	seen    time.Time
	flash   *flash
	done    chan struct{} // closed when the session ends
}

// flash is a message for the next page a session shows, shown once: the
// outcome of a form post, or a secret that is shown only once.
type flash struct {
	Error   string
	Notice  string
	Secret  string // a new token or pairing code
	Label   string // what Secret is
	QR      template.HTML
	Expires time.Time
}

// dashboard holds the sessions and the parsed pages.
type dashboard struct {
	now     func() time.Time
	loc     *time.Location
	scripts bool
	pages   map[string]*template.Template
	static  fs.FS

	mu       sync.Mutex
	sessions map[string]*session
}

func newDashboard(opts Options) *dashboard {
	loc := opts.Location
	if loc == nil {
		loc = time.Local
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	d := &dashboard{now: now, loc: loc, scripts: opts.Scripts, sessions: map[string]*session{}}
	d.static, _ = fs.Sub(uiFiles, "ui/static")
	funcs := template.FuncMap{
		"when":  d.when,
		"ago":   d.ago,
		"lower": strings.ToLower,
		"verbs": deviceVerbs,
		"has":   func(list []string, s string) bool { return contains(list, s) },
		"dict":  dict,
	}
	d.pages = map[string]*template.Template{}
	names, _ := fs.Glob(uiFiles, "ui/pages/*.html")
	for _, name := range names {
		base := strings.TrimSuffix(name[len("ui/pages/"):], ".html")
		d.pages[base] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(uiFiles, "ui/layout.html", name))
	}
	return d
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// dict builds a map for passing several values to a template.
func dict(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		m[k] = kv[i+1]
	}
	return m
}

func (d *dashboard) when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.In(d.loc).Format("2006-01-02 15:04:05")
}

func (d *dashboard) ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	a := d.now().Sub(t)
	switch {
	case a < time.Minute:
		return "just now"
	case a < time.Hour:
		return (a / time.Minute * time.Minute).String() + " ago"
	case a < 48*time.Hour:
		return (a / time.Hour * time.Hour).String() + " ago"
	}
	return d.when(t)
}

// deviceVerbs lists the buttons a device of kind gets.
func deviceVerbs(kind string) []string {
	switch kind {
	case actions.KindLock:
		return []string{"lock", "unlock"}
	case actions.KindLight:
		return []string{"on", "off"}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newSession stores a session for the person p signed in as with token,
// making room when the bounds are reached.
func (d *dashboard) newSession(p actions.Principal, token string) *session {
	now := d.now()
	s := &session{id: randomHex(32), token: token, user: p.ID, tokenID: p.Token, csrf: randomHex(32),
		created: now, seen: now, done: make(chan struct{})}
	d.mu.Lock()
	defer d.mu.Unlock()
	var mine []*session
	for _, o := range d.sessions {
		if d.expired(o, now) {
			d.endLocked(o)
		} else if o.user == s.user {
			mine = append(mine, o)
		}
	}
	for len(mine) >= maxUserSessions {
		d.endLocked(oldest(mine))
		mine = d.userSessionsLocked(s.user)
	}
	for len(d.sessions) >= maxSessions {
		all := make([]*session, 0, len(d.sessions))
		for _, o := range d.sessions {
			all = append(all, o)
		}
		d.endLocked(oldest(all))
	}
	d.sessions[s.id] = s
	return s
}

func (d *dashboard) userSessionsLocked(user string) []*session {
	var out []*session
	for _, o := range d.sessions {
		if o.user == user {
			out = append(out, o)
		}
	}
	return out
}

func oldest(list []*session) *session {
	o := list[0]
	for _, s := range list[1:] {
		if s.seen.Before(o.seen) {
			o = s
		}
	}
	return o
}

func (d *dashboard) expired(s *session, now time.Time) bool {
	return now.Sub(s.seen) >= sessionIdle || now.Sub(s.created) >= sessionMax
}

// lookup returns the live session with id, nil if none; it counts as use.
func (d *dashboard) lookup(id string) *session {
	if id == "" {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sessions[id]
	if s == nil {
		return nil
	}
	now := d.now()
	if d.expired(s, now) {
		d.endLocked(s)
		return nil
	}
	s.seen = now
	return s
}

// end ends a session: it is forgotten and its live streams close.
func (d *dashboard) end(s *session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.endLocked(s)
}

func (d *dashboard) endLocked(s *session) {
	if d.sessions[s.id] == s {
		delete(d.sessions, s.id)
		close(s.done)
	}
}

func (d *dashboard) setFlash(s *session, f *flash) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s.flash = f
}

func (d *dashboard) takeFlash(s *session) *flash {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

const sessionKey = "dashboard_session"

func currentSession(c echo.Context) *session {
	s, _ := c.Get(sessionKey).(*session)
	return s
}

// wantsHTML tells page requests (answered with a redirect to the sign-in
// page) from the dashboard script's requests under /ui/ (answered in JSON).
func wantsHTML(c echo.Context) bool {
	return !strings.HasPrefix(c.Request().URL.Path, "/ui/")
}

// sameOrigin refuses a state-changing request sent from another site: the
// browser names the page's origin in Origin (and Sec-Fetch-Site).
func sameOrigin(c echo.Context) error {
	r := c.Request()
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return actions.Errorf(actions.EForbidden, "request from another site refused")
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return actions.Errorf(actions.EForbidden, "request from another site refused")
		}
	}
	return nil
}

// withSession admits requests of a signed-in browser. It authenticates the
// session's token again, as REST does for a bearer, so the session ends as
// soon as the token or its user does. Requests other than GET must also
// carry the session's CSRF token, as a form field or header.
func (s *server) withSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		d := s.dash
		var sess *session
		if ck, err := c.Cookie(sessionCookie); err == nil {
			sess = d.lookup(ck.Value)
		}
		if sess == nil {
			return s.signedOut(c, "signin")
		}
		p, err := s.svc.AuthenticateBearer(sess.token, c.Request().RemoteAddr)
		if err != nil {
			if actions.ErrorCode(err) == actions.ETooMany {
				return err
			}
			d.end(sess)
			return s.signedOut(c, "ended")
		}
		if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead {
			if err := sameOrigin(c); err != nil {
				return err
			}
			got := c.Request().Header.Get(csrfHeader)
			if got == "" {
				got = c.FormValue(csrfField)
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
				return actions.Errorf(actions.EForbidden, "the form has expired: reload the page and try again")
			}
		}
		c.Set(principalKey, p)
		c.Set(sessionKey, sess)
		c.Response().Header().Set("Cache-Control", "no-store")
		return next(c)
	}
}

// signedOut answers a request without a live session: pages go to the
// sign-in page (saying why), the script's requests get 401.
func (s *server) signedOut(c echo.Context, why string) error {
	clearSessionCookie(c)
	if wantsHTML(c) && c.Request().Method == http.MethodGet {
		q := url.Values{"why": {why}}
		if why == "signin" && c.Request().URL.Path != "/" {
			q.Set("next", c.Request().URL.RequestURI())
		}
		return c.Redirect(http.StatusSeeOther, "/signin?"+q.Encode())
	}
	if why == "ended" {
		return actions.Errorf(actions.EUnauthorized, "your session has ended: sign in again")
	}
	return actions.Errorf(actions.EUnauthorized, "not signed in")
}

func setSessionCookie(c echo.Context, id string) {
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: c.Request().TLS != nil, MaxAge: int(sessionMax / time.Second)})
}

func clearSessionCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: c.Request().TLS != nil, MaxAge: -1})
}

// whyText is what the sign-in page says for ?why=: fixed sentences, so a
// link cannot put words of its own on the page.
var whyText = map[string]string{
	"signin": "Sign in to see your doors.",
	"ended":  "Your session has ended (token revoked or expired, or session timed out): sign in again.",
	"out":    "You are signed out.",
}

// pageData is what every page template gets.
type pageData struct {
	Title   string
	Nav     string
	User    string
	Role    string
	CSRF    string
	Admin   bool
	Pairs   bool // may create pairings and grants (admins and members)
	Scripts bool
	Flash   *flash
	Data    any
}

// render writes page name with data for the session's person.
func (s *server) render(c echo.Context, status int, name, title string, data any) error {
	pd := pageData{Title: title, Nav: name, Data: data, Scripts: s.dash.scripts}
	if sess := currentSession(c); sess != nil {
		p := principal(c)
		pd.User, pd.Role, pd.CSRF = p.ID, p.Role, sess.csrf
		pd.Admin = p.IsAdmin()
		pd.Pairs = p.Role == actions.RoleAdmin || p.Role == actions.RoleMember
		pd.Flash = s.dash.takeFlash(sess)
	}
	t := s.dash.pages[name]
	if t == nil {
		return actions.Errorf(actions.EInternal, "no page %q", name)
	}
	var b strings.Builder
	if err := t.Execute(&b, pd); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	return c.HTML(status, b.String())
}

// pageError shows err on an error page, in words, with the status REST
// would answer.
func (s *server) pageError(c echo.Context, err error) error {
	code := actions.ErrorCode(err)
	status := statusOf[code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	msg := actions.ErrorMessage(err)
	if status >= 500 {
		s.log.Error("dashboard page failed", "path", c.Request().URL.Path, "error", err)
	}
	return s.render(c, status, "error", "Error", msg)
}

// done ends a form post: the outcome goes into the session's flash and the
// browser goes to the page at to (post, redirect, get).
func (s *server) done(c echo.Context, to string, err error, notice string) error {
	f := &flash{Notice: notice}
	if err != nil {
		if actions.ErrorCode(err) == actions.EInternal {
			s.log.Error("dashboard action failed", "path", c.Request().URL.Path, "error", err)
		}
		f = &flash{Error: actions.ErrorMessage(err)}
	}
	s.dash.setFlash(currentSession(c), f)
	return c.Redirect(http.StatusSeeOther, to)
}

// handleStatic serves the embedded static files and the manifest: public,
// like /hello.
func (s *server) handleStatic(c echo.Context) error {
	name := strings.TrimPrefix(c.Request().URL.Path, "/static/")
	if c.Request().URL.Path == "/manifest.webmanifest" {
		name = "manifest.webmanifest"
		c.Response().Header().Set(echo.HeaderContentType, "application/manifest+json")
	}
	if name == "" || strings.Contains(name, "..") {
		return echo.ErrNotFound
	}
	if _, err := fs.Stat(s.dash.static, name); err != nil {
		return echo.ErrNotFound
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=3600")
	c.Response().Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeFileFS(c.Response(), c.Request(), s.dash.static, name)
	return nil
}

type signinPage struct {
	Message string
	Error   string
	Name    string
	Next    string
}

func (s *server) handleSigninPage(c echo.Context) error {
	return s.render(c, http.StatusOK, "signin", "Sign in",
		signinPage{Message: whyText[c.QueryParam("why")], Next: safeNext(c.QueryParam("next"))})
}

// safeNext keeps a return path only when it is a path on this server.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, `\`) {
		return "/"
	}
	return next
}

// handleSignin checks name and token like a REST login (the same call,
// the same throttle) and starts a session.
func (s *server) handleSignin(c echo.Context) error {
	if err := sameOrigin(c); err != nil {
		return err
	}
	name := strings.TrimSpace(c.FormValue("name"))
	token := strings.TrimSpace(c.FormValue("token"))
	page := signinPage{Name: name, Next: safeNext(c.FormValue("next"))}
	fail := func(status int, msg string) error {
		page.Error = msg
		return s.render(c, status, "signin", "Sign in", page)
	}
	if name == "" || token == "" {
		return fail(http.StatusBadRequest, "Enter your user name and an API token.")
	}
	remote := c.Request().RemoteAddr
	p, err := s.svc.AuthenticateBearer(token, remote)
	if err != nil {
		if actions.ErrorCode(err) == actions.ETooMany {
			return fail(http.StatusTooManyRequests, actions.ErrorMessage(err))
		}
		return fail(http.StatusUnauthorized, "Wrong user name or token.")
	}
	if p.ID != name {
		s.svc.RefuseLogin(actions.ViaREST, name, remote, "dashboard sign-in with the token of another user")
		return fail(http.StatusUnauthorized, "Wrong user name or token.")
	}
	sess := s.dash.newSession(p, token)
	setSessionCookie(c, sess.id)
	return c.Redirect(http.StatusSeeOther, page.Next)
}

func (s *server) handleSignout(c echo.Context) error {
	s.dash.end(currentSession(c))
	clearSessionCookie(c)
	return c.Redirect(http.StatusSeeOther, "/signin?why=out")
}

// handleSessionCheck answers the script's question "am I still signed
// in?" after its live stream closed.
func (s *server) handleSessionCheck(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"user": principal(c).ID})
}

// handleDashboardStream is the event stream of REST for a session: it
// also closes when the session ends (sign-out, timeout).
func (s *server) handleDashboardStream(c echo.Context) error {
	sess := currentSession(c)
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	left := sessionMax - s.dash.now().Sub(sess.created)
	timer := time.AfterFunc(left, cancel)
	defer timer.Stop()
	go func() {
		select {
		case <-sess.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	c.SetRequest(c.Request().WithContext(ctx))
	return s.handleEventStream(c)
}
