package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The dashboard's end-to-end tests drive a real headless Chromium (the
// Debian package chromium; .ci/run installs it) against the real server.
// A test that cannot start Chromium fails: it never skips.

// browserWait bounds each wait for the page; generous, for a slow machine.
const browserWait = 30 * time.Second

var screenshotDir = flag.String("screenshots", "", "with TestDashboardScreenshots: write screenshots of the dashboard into this directory")

// chromiumPath finds Chromium: $CHROMIUM, /usr/bin/chromium, or on $PATH.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium not found: install the Debian package chromium (apt-get install chromium; .ci/run does) or set $CHROMIUM")
	return ""
}

// startBrowser starts one headless Chromium for the test, with the flags
// this machine's closed network needs, and returns its root context.
func startBrowser(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser, bound to the context it runs on:
	// no timeout here, or the browser would end with it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// page is one person's browser: its own browser context (cookies) in the
// test's Chromium.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func newPage(t *testing.T, root context.Context, base string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(root, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // opens the tab, bound to ctx
		t.Fatalf("open a tab: %v", err)
	}
	return &page{t: t, ctx: ctx, base: base}
}

// do runs steps, failing the test (saying what) when they do not finish
// within browserWait.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v (page: %s)", what, err, p.describe())
	}
}

// wait polls a JavaScript condition until it holds, across navigations
// (a poll in a page that goes away is started again in the next one).
func (p *page) wait(what, js string) {
	p.t.Helper()
	deadline := time.Now().Add(browserWait)
	for {
		left := time.Until(deadline)
		ctx, cancel := context.WithTimeout(p.ctx, left+5*time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+js+")",
			chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(left)))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || p.ctx.Err() != nil {
			p.t.Fatalf("waiting for %s: %v (page: %s)", what, err, p.describe())
		}
		select { // the page changed under the poll: try again in the new one
		case <-time.After(50 * time.Millisecond):
		case <-p.ctx.Done():
		}
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// describe is the page's address and the start of its text, for failures.
func (p *page) describe() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " | " + document.body.innerText.slice(0, 600)`))
	if err != nil {
		return "unknown: " + err.Error()
	}
	return v
}

func (p *page) open(path string) {
	p.t.Helper()
	p.do("open "+path, chromedp.Navigate(p.base+path))
}

// signIn fills the sign-in form and waits for the doors page.
func (p *page) signIn(name, token string) {
	p.t.Helper()
	p.open("/")
	p.do("sign in as "+name,
		chromedp.WaitVisible("#name"),
		chromedp.SendKeys("#name", name),
		chromedp.SendKeys("#token", token),
		chromedp.Submit("#token"),
	)
	p.wait("the doors page", `document.querySelector("h1") && document.querySelector("h1").textContent === "Doors and lights"`)
}

// js quotes s as a JavaScript string.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func textOf(sel string) string {
	return `((document.querySelector(` + js(sel) + `) || {}).textContent || "")`
}

// TestDashboard walks the story in the browser: sign in; a device
// comes online and the page shows it without reload; lock it and see
// "locked" after the ack; a stranger picture over MQTT appears live; the
// admin creates a guest with a Tuesday-morning grant; the guest sees only
// that door and a refused action says why; revoking the guest's token ends
// the guest's session.
func TestDashboard(t *testing.T) {
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now; c.CommandTTL = 30 * time.Second })
	root := startBrowser(t, 1280, 900)
	admin := newPage(t, root, s.url)

	admin.signIn("admin", testAdminToken)
	admin.wait("no devices yet", `document.querySelector("#nodevices")`)
	eval[bool](admin, `window.sameDocument = true`)

	// A device created and connected while the page is open shows up, then
	// online, without a reload.
	secret := s.createDevice("door1", "lock")
	s.createDevice("back", "lock")
	admin.wait("door1's card", `document.querySelector("#dev-door1")`)
	door := s.device("door1", secret, "lock")
	admin.wait("door1 online", `document.querySelector("#dev-door1.online")`)

	// Lock: the card says sent, the device acks, the card says locked.
	admin.do("click lock", chromedp.Click(`#dev-door1 button[data-verb="lock"]`))
	admin.wait("lock sent", textOf("#dev-door1 .cmd")+`.startsWith("lock: sent")`)
	f := strings.Fields(door.expect("todevice/door1 lock "))
	door.publish("toserver", false, "ack "+f[2]+" ok locked")
	admin.wait("lock done", textOf("#dev-door1 .cmd")+` === "lock: done, locked"`)
	admin.wait("state locked", textOf("#dev-door1 .state")+` === "locked"`)
	if !eval[bool](admin, `window.sameDocument === true`) {
		t.Error("the page was reloaded")
	}

	// Lock all with one lock offline: each lock's outcome in words.
	stop := ackLoop(t, door, "door1", lockStates)
	admin.do("click lock all", chromedp.Click(`#lockall`))
	admin.wait("lock all results", `document.querySelectorAll("#allresult li").length === 2 && `+textOf("#allresult")+`.includes("back is offline: nothing sent") && `+textOf("#allresult")+`.includes("door1 lock: done, locked")`)
	stop()

	// A stranger picture over MQTT appears on the pictures page, live.
	camSecret := s.createDevice("cam1", "camera")
	cam := s.device("cam1", camSecret, "camera")
	admin.open("/pictures")
	admin.wait("the pictures page", `document.querySelector("#pictures[data-live]")`)
	cam.publish("toserver", false, append([]byte("find_stranger "), testImage(t, "jpeg", 90)...))
	admin.wait("the picture", `document.querySelector("#pictures figure img") && document.querySelector("#pictures figure img").complete && document.querySelector("#pictures figure img").naturalWidth === 64`)
	admin.wait("the notice", textOf("#toasts")+`.includes("New picture from cam1")`)

	// The admin adds a guest, then a Tuesday-morning grant for door1.
	admin.open("/people")
	admin.do("add a guest",
		chromedp.SendKeys(`#adduser input[name="name"]`, "gail"),
		chromedp.SetValue(`#adduser select[name="role"]`, "guest"),
		chromedp.Submit(`#adduser input[name="name"]`),
	)
	admin.wait("the guest's token", `document.querySelector("#secret")`)
	guestToken := eval[string](admin, textOf("#secret"))
	if len(guestToken) < 32 {
		t.Fatalf("guest token %q", guestToken)
	}
	admin.do("add a grant",
		chromedp.SetValue(`#grant-user`, "gail"),
		chromedp.SetValue(`#grant-device`, "door1"),
		chromedp.Click(`#wd-tue`),
		chromedp.SetValue(`#grant-hfrom`, "09:00"),
		chromedp.SetValue(`#grant-huntil`, "12:00"),
		chromedp.Submit(`#grant-hfrom`),
	)
	admin.wait("the grant listed", textOf(".grants tbody")+`.includes("gail") && `+textOf(".grants tbody")+`.includes("09:00-12:00") && `+textOf(".grants tbody")+`.includes("tue")`)
	var grants struct {
		Items []struct {
			User, Device, Hours string
			Weekdays            []string
		}
	}
	s.apiJSON("GET", "/api/v1/grants", nil, http.StatusOK, &grants)
	if len(grants.Items) != 1 || grants.Items[0].User != "gail" || grants.Items[0].Device != "door1" ||
		grants.Items[0].Hours != "09:00-12:00" || strings.Join(grants.Items[0].Weekdays, ",") != "tue" {
		t.Fatalf("grants after the form: %+v", grants.Items)
	}

	// A pairing code comes with its QR code.
	admin.do("new pairing code", chromedp.Click(`#addpairing button`))
	admin.wait("the pairing code and QR", `document.querySelector(".qrbox svg path") && /^[A-Z0-9]{4}-[A-Z0-9]{4}$/.test(`+textOf("#secret")+`)`)

	// The guest signs in in another browser and sees only door1.
	guest := newPage(t, root, s.url)
	guest.signIn("gail", guestToken)
	guest.wait("door1 for the guest", `document.querySelector("#dev-door1")`)
	if n := eval[int](guest, `document.querySelectorAll("#devices .device").length`); n != 1 {
		t.Errorf("the guest sees %d devices, want only door1 (page: %s)", n, guest.describe())
	}
	if eval[bool](guest, `!!document.querySelector('nav a[href="/people"]')`) {
		t.Error("the guest's menu offers the people page")
	}

	// After noon the grant no longer allows it: the refusal says why, in
	// the same words as REST.
	clk.set(tuesday10.Add(3 * time.Hour))
	_, body := s.as(guestToken, "POST", "/api/v1/devices/door1/unlock", nil)
	var restErr struct{ Error struct{ Message string } }
	if err := json.Unmarshal([]byte(body), &restErr); err != nil || restErr.Error.Message == "" {
		t.Fatalf("REST refusal: %s", body)
	}
	guest.do("click unlock", chromedp.Click(`#dev-door1 button[data-verb="unlock"]`))
	guest.wait("the refusal", textOf("#dev-door1 .cmd.error")+` === `+js(restErr.Error.Message))

	// Revoking the guest's token ends the guest's session: the live page
	// goes to the sign-in page, which says why.
	var tokens struct{ Items []struct{ ID string } }
	s.apiJSON("GET", "/api/v1/users/gail/tokens", nil, http.StatusOK, &tokens)
	if len(tokens.Items) != 1 {
		t.Fatalf("gail's tokens: %+v", tokens.Items)
	}
	s.apiJSON("DELETE", "/api/v1/tokens/"+tokens.Items[0].ID, nil, http.StatusNoContent, nil)
	guest.wait("the sign-in page", `location.pathname === "/signin" && document.body.innerText.includes("Your session has ended")`)
	guest.open("/")
	guest.wait("still signed out", `location.pathname === "/signin"`)
}

// signinClient is a browser-like HTTP client: cookies, no redirects.
func signinClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	resp.Body.Close()
	return resp
}

func getPage(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// csrfOf reads the CSRF token a page carries.
func csrfOf(t *testing.T, html string) string {
	t.Helper()
	_, rest, ok := strings.Cut(html, `<meta name="csrf" content="`)
	tok, _, ok2 := strings.Cut(rest, `"`)
	if !ok || !ok2 || len(tok) < 32 {
		t.Fatalf("no CSRF token in the page")
	}
	return tok
}

// TestDashboardSessions tries to break the session rules without a
// browser: cookie flags, wrong credentials, CSRF, sign-out, public and
// unknown paths.
func TestDashboardSessions(t *testing.T) {
	s := startServer(t, "")
	alice := s.createUser("alice", "member")

	t.Run("PagesNeedASession", func(t *testing.T) {
		c := signinClient(t)
		resp, _ := getPage(t, c, s.url+"/activity?type=ack")
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin?") {
			t.Errorf("GET /activity without a session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		if st, body := s.as("-", "GET", "/ui/events", nil); st != http.StatusUnauthorized {
			t.Errorf("GET /ui/events without a session: %d %s", st, body)
		}
		if st, body := s.as("-", "POST", "/ui/lock", nil); st != http.StatusUnauthorized {
			t.Errorf("POST /ui/lock without a session: %d %s", st, body)
		}
		// A bearer token is not a session.
		if st, _ := s.as(testAdminToken, "GET", "/ui/session", nil); st != http.StatusUnauthorized {
			t.Errorf("GET /ui/session with a bearer: %d", st)
		}
	})

	t.Run("PublicAndUnknown", func(t *testing.T) {
		for path, want := range map[string]int{"/static/app.css": 200, "/static/app.js": 200, "/static/icon-192.png": 200,
			"/manifest.webmanifest": 200, "/signin": 200, "/static/nope.css": 404, "/static/": 404, "/nope": 404,
			"/ui/nope": 404, "/static/../web.go": 404} {
			if st, body := s.as("-", "GET", path, nil); st != want {
				t.Errorf("GET %s: %d, want %d: %.100s", path, st, want, body)
			}
		}
		if st, body := s.as("-", "GET", "/nope", nil); !strings.Contains(body, `"not_found"`) {
			t.Errorf("GET /nope: %d %s, want the JSON 404", st, body)
		}
	})

	t.Run("WrongCredentials", func(t *testing.T) {
		c := signinClient(t)
		for _, form := range []url.Values{
			{"name": {"alice"}, "token": {"not-a-token-at-all-0123456789"}},
			{"name": {"admin"}, "token": {alice}}, // alice's token is not the admin's
			{"name": {"alice"}, "token": {""}},
		} {
			resp := postForm(t, c, s.url+"/signin", form)
			if resp.StatusCode == http.StatusSeeOther || len(resp.Cookies()) > 0 && resp.Cookies()[0].Value != "" {
				t.Errorf("sign in with %v: %d, cookies %v", form["name"], resp.StatusCode, resp.Cookies())
			}
		}
	})

	t.Run("SignInOut", func(t *testing.T) {
		c := signinClient(t)
		resp := postForm(t, c, s.url+"/signin", url.Values{"name": {"alice"}, "token": {alice}, "next": {"//evil.example/"}})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
			t.Fatalf("sign in: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "gatehouse_session" {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || strings.Contains(ck.Value, alice) {
			t.Fatalf("session cookie %+v", ck)
		}
		resp, html := getPage(t, c, s.url+"/")
		if resp.StatusCode != 200 || !strings.Contains(html, "Doors and lights") {
			t.Fatalf("doors page: %d", resp.StatusCode)
		}
		csrf := csrfOf(t, html)

		// Posts need the CSRF token and must come from this site.
		if resp := postForm(t, c, s.url+"/ui/lock", nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("post without the CSRF token: %d", resp.StatusCode)
		}
		if resp := postForm(t, c, s.url+"/ui/lock", nil, "X-CSRF-Token", csrf+"0"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("post with a wrong CSRF token: %d", resp.StatusCode)
		}
		if resp := postForm(t, c, s.url+"/ui/lock", nil, "X-CSRF-Token", csrf, "Origin", "http://evil.example"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("post from another origin: %d", resp.StatusCode)
		}
		if resp := postForm(t, c, s.url+"/ui/lock", nil, "X-CSRF-Token", csrf); resp.StatusCode != http.StatusOK {
			t.Errorf("post with the CSRF token: %d", resp.StatusCode)
		}
		// What the API forbids, the dashboard forbids, in words.
		resp, html = getPage(t, c, s.url+"/backup")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(html, "only admins take backups") {
			t.Errorf("a member's backup page: %d", resp.StatusCode)
		}

		if resp := postForm(t, c, s.url+"/signout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign out: %d", resp.StatusCode)
		}
		// The old cookie no longer works, even when sent again by hand.
		c2 := signinClient(t)
		u, _ := url.Parse(s.url)
		c2.Jar.SetCookies(u, []*http.Cookie{{Name: "gatehouse_session", Value: ck.Value}})
		if resp, _ := getPage(t, c2, s.url+"/ui/session"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("session after sign-out: %d", resp.StatusCode)
		}
	})

	t.Run("DeletedUserEndsSession", func(t *testing.T) {
		bob := s.createUser("bob", "member")
		c := signinClient(t)
		postForm(t, c, s.url+"/signin", url.Values{"name": {"bob"}, "token": {bob}})
		if resp, _ := getPage(t, c, s.url+"/ui/session"); resp.StatusCode != http.StatusOK {
			t.Fatalf("bob's session: %d", resp.StatusCode)
		}
		s.apiJSON("DELETE", "/api/v1/users/bob", nil, http.StatusNoContent, nil)
		if resp, _ := getPage(t, c, s.url+"/ui/session"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("deleted bob's session: %d", resp.StatusCode)
		}
	})

	t.Run("Throttled", func(t *testing.T) {
		c := signinClient(t)
		var last int
		for i := 0; i < 8; i++ {
			last = postForm(t, c, s.url+"/signin", url.Values{"name": {"mallory"}, "token": {fmt.Sprintf("guess-%d-0123456789abcdef", i)}}).StatusCode
		}
		if last != http.StatusTooManyRequests {
			t.Errorf("8th wrong sign-in: %d, want 429", last)
		}
	})
}

// TestDashboardScreenshots writes screenshots of the main pages at desktop
// (1280 px) and phone (390 px) width into the directory given with
// -screenshots (docs/screenshots in the README's command); without the
// flag it has nothing to do.
func TestDashboardScreenshots(t *testing.T) {
	if *screenshotDir == "" {
		t.Skip("no -screenshots directory given")
	}
	dir, err := filepath.Abs(*screenshotDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	clk := newClock(tuesday10)
	s := startServerWith(t, "", func(c *config) { c.now = clk.now; c.CommandTTL = 30 * time.Second })
	// A small house: two locks, a light and a camera, a guest, a picture.
	front := s.device("front-door", s.createDevice("front-door", "lock"), "lock")
	t.Cleanup(ackLoop(t, front, "front-door", lockStates))
	s.createDevice("back-door", "lock")
	light := s.device("porch-light", s.createDevice("porch-light", "light"), "light")
	t.Cleanup(ackLoop(t, light, "porch-light", map[string]string{"on": "on", "off": "off"}))
	cam := s.device("door-cam", s.createDevice("door-cam", "camera"), "camera")
	s.apiJSON("POST", "/api/v1/devices/front-door/lock", nil, http.StatusOK, nil)
	s.apiJSON("POST", "/api/v1/devices/porch-light/on", nil, http.StatusOK, nil)
	for i, shade := range []uint8{40, 120, 200} {
		cam.publish("toserver", false, append([]byte(fmt.Sprintf("find_stranger %d ", tuesday10.Unix()-int64(600*(3-i)))), testImage(t, "jpeg", shade)...))
	}
	s.createUser("cleaner", "guest")
	s.grant(map[string]any{"user": "cleaner", "device": "front-door", "weekdays": []string{"tue", "fri"}, "hours": "09:00-12:00"})

	for _, size := range []struct {
		name          string
		width, height int
	}{{"desktop", 1280, 900}, {"phone", 390, 844}} {
		root := startBrowser(t, size.width, size.height)
		p := newPage(t, root, s.url)
		shot := func(name string) {
			p.t.Helper()
			ctx, cancel := context.WithTimeout(p.ctx, browserWait)
			defer cancel()
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatalf("screenshot %s: %v", name, err)
			}
			file := filepath.Join(dir, name+"-"+size.name+".png")
			if err := os.WriteFile(file, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", file)
		}
		p.open("/signin")
		p.wait("sign-in form", `document.querySelector("#name")`)
		shot("signin")
		p.signIn("admin", testAdminToken)
		p.wait("live", `document.querySelector("#live.on") && document.querySelector("#dev-front-door.online")`)
		p.do("lock all", chromedp.Click("#lockall"))
		p.wait("lock all done", `document.querySelectorAll("#allresult li").length === 2 && !`+textOf("#allresult")+`.includes("lock: sent")`)
		shot("doors")
		p.open("/devices/front-door")
		p.wait("device page", `document.querySelector(".details")`)
		shot("device")
		p.open("/activity")
		p.wait("activity", `document.querySelector(".events tbody tr")`)
		shot("activity")
		p.open("/pictures")
		p.wait("pictures", `[...document.querySelectorAll("#pictures img")].every(i => i.complete && i.naturalWidth > 0)`)
		shot("pictures")
		p.open("/people")
		p.do("pairing code", chromedp.Click(`#addpairing button`))
		p.wait("QR code", `document.querySelector(".qrbox svg")`)
		shot("people")
	}
}

// TestDashboardPages renders every page as an admin and puts a script
// through the upload form, with its compile error shown in words.
func TestDashboardPages(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.Scripts = true })
	s.createDevice("door1", "lock")
	c := signinClient(t)
	postForm(t, c, s.url+"/signin", url.Values{"name": {"admin"}, "token": {testAdminToken}})
	var csrf string
	for _, path := range []string{"/", "/devices/door1", "/activity", "/activity?device=door1&type=admin&user=admin&since=2000-01-01T00:00",
		"/pictures", "/people", "/scripts", "/backup"} {
		resp, html := getPage(t, c, s.url+path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d %.300s", path, resp.StatusCode, html)
		}
		csrf = csrfOf(t, html)
	}
	if resp, html := getPage(t, c, s.url+"/devices/nope"); resp.StatusCode != http.StatusNotFound || !strings.Contains(html, "device &#34;nope&#34; not found") {
		t.Errorf("GET /devices/nope: %d", resp.StatusCode)
	}
	if resp, html := getPage(t, c, s.url+"/activity?since=yesterday"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(html, "since must be a date") {
		t.Errorf("GET /activity?since=yesterday: %d", resp.StatusCode)
	}
	resp := postForm(t, c, s.url+"/scripts", url.Values{"csrf": {csrf}, "name": {"hello"}, "source": {"def action(msg, server):\n    return None\n"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("upload a script: %d", resp.StatusCode)
	}
	if resp, html := getPage(t, c, s.url+"/scripts/hello"); resp.StatusCode != http.StatusOK || !strings.Contains(html, "def action(msg, server)") {
		t.Errorf("GET /scripts/hello: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", s.url+"/scripts", strings.NewReader(url.Values{"csrf": {csrf}, "name": {"broken"}, "source": {"def action(msg, server)\n"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `class="flash error"`) || !strings.Contains(string(body), "def action(msg, server)") {
		t.Errorf("upload a broken script: %d %s", r2.StatusCode, body)
	}
	resp, _ = getPage(t, c, s.url+"/backup/download")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Disposition") == "" {
		t.Errorf("backup download: %d", resp.StatusCode)
	}
}
