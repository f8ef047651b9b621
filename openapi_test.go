package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/labstack/echo/v4"

	"gatehouse/web"
)

// loadOpenAPI loads and validates the served document.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(web.OpenAPI())
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json does not validate: %v", err)
	}
	return doc
}

// TestOpenAPIDocument: the document is valid OpenAPI 3.1 (by kin-openapi's
// own validation) and served without a token.
func TestOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	s := startServer(t, "")
	resp, body := s.get("/api/v1/openapi.json")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(body, web.OpenAPI()) {
		t.Fatalf("GET /api/v1/openapi.json without a token: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
}

// TestOpenAPIMatchesRoutes: every /api/v1 route of the server is in the
// document, with its method, and the document has no other.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	s := startServer(t, "")
	e, ok := s.app.http.Handler.(*echo.Echo)
	if !ok {
		t.Fatalf("handler is a %T, not Echo", s.app.http.Handler)
	}
	var served []string
	for _, r := range e.Routes() {
		if !strings.HasPrefix(r.Path, "/api/v1/") || strings.HasSuffix(r.Name, "NotFoundHandler") || strings.HasSuffix(r.Path, "/*") {
			continue // the group's catch-all answers 401/404 for unknown paths
		}
		parts := strings.Split(r.Path, "/")
		for i, p := range parts {
			if strings.HasPrefix(p, ":") {
				parts[i] = "{" + p[1:] + "}"
			}
		}
		served = append(served, r.Method+" "+strings.Join(parts, "/"))
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	sort.Strings(served)
	sort.Strings(documented)
	served = slices.Compact(served)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in web/openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) {
			t.Errorf("web/openapi.json has %s, which the server does not serve", d)
		}
	}
}

// validator is an http.RoundTripper that validates every /api/v1 request
// and its answer against the document, and notes which operations
// answered which statuses.
type validator struct {
	t      *testing.T
	router routers.Router
	// answersOnly skips checking requests: the end-to-end tests send
	// malformed requests on purpose, and their answers must still follow
	// the document.
	answersOnly bool
	mu          sync.Mutex
	seen        map[string][]int // operation id → statuses
}

func newValidator(t *testing.T) *validator {
	return &validator{t: t, router: openAPIRouter(t), seen: map[string][]int{}}
}

var openAPI struct {
	once   sync.Once
	router routers.Router
	err    error
}

// openAPIRouter is the document's router, loaded once for every test.
func openAPIRouter(t *testing.T) routers.Router {
	t.Helper()
	openAPI.once.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(web.OpenAPI())
		if err == nil {
			err = doc.Validate(context.Background())
		}
		if err == nil {
			openAPI.router, err = legacy.NewRouter(doc)
		}
		openAPI.err = err
	})
	if openAPI.err != nil {
		t.Fatalf("openapi.json: %v", openAPI.err)
	}
	return openAPI.router
}

// answerValidator is the transport of the end-to-end tests' API client:
// every /api/v1 answer they get is checked against the document.
func answerValidator(t *testing.T) *validator {
	return &validator{t: t, router: openAPIRouter(t), answersOnly: true, seen: map[string][]int{}}
}

func (v *validator) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.Path, "/api/v1/") {
		return http.DefaultTransport.RoundTrip(req)
	}
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	reset := func() {
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	reset()
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		if !v.answersOnly { // end-to-end tests try paths that do not exist on purpose
			v.t.Errorf("%s %s: not in the OpenAPI document: %v", req.Method, req.URL.Path, err)
		}
		return http.DefaultTransport.RoundTrip(req)
	}
	ctx := context.Background()
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil && !v.answersOnly {
		v.t.Errorf("%s %s: request does not follow the document: %v", req.Method, req.URL, err)
	}
	reset()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	var out []byte
	if !stream {
		out, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(out))
	}
	ropts := *opts
	ropts.ExcludeResponseBody = stream
	rin := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: &ropts}
	rin.SetBodyBytes(out)
	if err := openapi3filter.ValidateResponse(ctx, rin); err != nil {
		v.t.Errorf("%s %s: answer %d does not follow the document: %v\n%s", req.Method, req.URL, resp.StatusCode, err, out)
	}
	v.mu.Lock()
	v.seen[route.Operation.OperationID] = append(v.seen[route.Operation.OperationID], resp.StatusCode)
	v.mu.Unlock()
	return resp, nil
}

// TestOpenAPIEveryRoute sends a request to every /api/v1 operation that
// succeeds and one that fails, through a client that validates each
// request and answer against the document.
func TestOpenAPIEveryRoute(t *testing.T) {
	s := startServerWith(t, "", func(c *config) { c.Scripts = true; roundTripTTL(c) })
	v := newValidator(t)
	client := &http.Client{Transport: v, Timeout: 30 * time.Second}
	call := func(method, path, token, contentType string, body []byte, want int) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, s.url+path, bytes.NewReader(body))
		if body == nil {
			req.Body = nil
		}
		switch {
		case token == "-":
		case strings.HasPrefix(token, "Basic "):
			req.Header.Set("Authorization", token)
		case token == "":
			req.Header.Set("Authorization", "Bearer "+testAdminToken)
		default:
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			if resp.StatusCode != want {
				t.Fatalf("%s %s: %d, want %d", method, path, resp.StatusCode, want)
			}
			return nil
		}
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, out)
		}
		return out
	}
	j := func(v any) []byte { b, _ := json.Marshal(v); return b }
	const js = "application/json"
	field := func(b []byte, name string) string { return jsonField(t, b, name) }

	// Devices.
	doorSecret := field(call("POST", "/api/v1/devices", "", js, j(map[string]string{"id": "door", "kind": "lock", "name": "Door"}), 201), "secret")
	call("POST", "/api/v1/devices", "", js, j(map[string]string{"id": "door", "kind": "lock"}), 409)
	camSecret := field(call("POST", "/api/v1/devices", "", js, j(map[string]string{"id": "cam", "kind": "camera"}), 201), "secret")
	call("POST", "/api/v1/devices", "", js, j(map[string]string{"id": "spare", "kind": "light"}), 201)
	call("GET", "/api/v1/devices?limit=10", "", "", nil, 200)
	call("GET", "/api/v1/devices", "-", "", nil, 401)
	call("GET", "/api/v1/devices/door", "", "", nil, 200)
	call("GET", "/api/v1/devices/nowhere", "", "", nil, 404)
	call("PATCH", "/api/v1/devices/door", "", js, j(map[string]string{"name": "Front door"}), 200)
	call("PATCH", "/api/v1/devices/nowhere", "", js, j(map[string]string{"name": "x"}), 404)
	call("DELETE", "/api/v1/devices/spare", "", "", nil, 204)
	call("DELETE", "/api/v1/devices/spare", "", "", nil, 404)

	// Commands: the door offline, then online.
	call("POST", "/api/v1/devices/door/lock", "", "", nil, 409)
	door := s.device("door", doorSecret, "lock")
	t.Cleanup(ackLoop(t, door, "door", lockStates))
	cmdID := field(call("POST", "/api/v1/devices/door/lock?wait=10s", "", "", nil, 200), "id")
	call("GET", "/api/v1/commands/"+cmdID, "", "", nil, 200)
	call("GET", "/api/v1/commands/nothing", "", "", nil, 404)
	call("POST", "/api/v1/lock?wait=10s", "", "", nil, 200)
	call("POST", "/api/v1/lock", "-", "", nil, 401)
	call("POST", "/api/v1/unlock?wait=10s", "", "", nil, 200)
	call("POST", "/api/v1/unlock", "-", "", nil, 401)

	// Events.
	call("GET", "/api/v1/events?device=door&limit=5", "", "", nil, 200)
	call("GET", "/api/v1/events", "-", "", nil, 401)
	call("GET", "/api/v1/events/stream", "", "", nil, 200)
	call("GET", "/api/v1/events/stream", "-", "", nil, 401)

	// Strangers.
	basic := func(id, secret string) string {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(id, secret)
		return req.Header.Get("Authorization")
	}
	picID := field(call("POST", "/api/v1/strangers", basic("cam", camSecret), "image/png", testImage(t, "png", 7), 201), "id")
	call("POST", "/api/v1/strangers", basic("cam", "wrong"), "image/png", testImage(t, "png", 7), 401)
	call("GET", "/api/v1/strangers", "", "", nil, 200)
	call("GET", "/api/v1/strangers", "-", "", nil, 401)
	call("GET", "/api/v1/strangers/"+picID+"/picture", "", "", nil, 200)
	call("GET", "/api/v1/strangers/nothing/picture", "", "", nil, 404)

	// People and tokens.
	memberToken := field(call("POST", "/api/v1/users", "", js, j(map[string]string{"name": "mia", "role": "member"}), 201), "token")
	call("POST", "/api/v1/users", "", js, j(map[string]string{"name": "mia", "role": "member"}), 409)
	call("POST", "/api/v1/users", "", js, j(map[string]string{"name": "gone", "role": "guest"}), 201)
	call("GET", "/api/v1/users", "", "", nil, 200)
	call("GET", "/api/v1/users", "-", "", nil, 401)
	tokenID := field(call("POST", "/api/v1/users/mia/tokens", "", js, j(map[string]string{"name": "phone"}), 201), "id")
	call("POST", "/api/v1/users/mia/tokens", "-", js, j(map[string]string{"name": "phone"}), 401)
	call("GET", "/api/v1/users/mia/tokens", "", "", nil, 200)
	call("GET", "/api/v1/users/nobody/tokens", "", "", nil, 404)
	call("DELETE", "/api/v1/tokens/"+tokenID, "", "", nil, 204)
	call("DELETE", "/api/v1/tokens/"+tokenID, "", "", nil, 404)
	call("DELETE", "/api/v1/users/gone", "", "", nil, 204)
	call("DELETE", "/api/v1/users/gone", "", "", nil, 404)

	// Grants and pairings.
	grantID := field(call("POST", "/api/v1/grants", "", js, j(map[string]any{"user": "mia", "device": "door", "weekdays": []string{"mon", "tue"}, "hours": "09:00-17:00"}), 201), "id")
	call("POST", "/api/v1/grants", "-", js, j(map[string]any{"user": "mia", "device": "door"}), 401)
	call("GET", "/api/v1/grants", "", "", nil, 200)
	call("GET", "/api/v1/grants", "-", "", nil, 401)
	call("DELETE", "/api/v1/grants/"+grantID, "", "", nil, 204)
	call("DELETE", "/api/v1/grants/"+grantID, "", "", nil, 404)
	call("POST", "/api/v1/pairings", "", js, j(map[string]string{"kind": "light"}), 201)
	call("POST", "/api/v1/pairings", "-", js, j(map[string]string{"kind": "light"}), 401)

	// Scripts.
	const script = "def action(msg, server):\n    return None\n"
	call("PUT", "/api/v1/actions/hello_world", "", "text/plain", []byte(script), 201)
	call("PUT", "/api/v1/actions/broken", "", "text/plain", []byte("def action(:\n"), 400)
	call("GET", "/api/v1/actions", "", "", nil, 200)
	call("GET", "/api/v1/actions", "-", "", nil, 401)
	call("GET", "/api/v1/actions/hello_world", "", "", nil, 200)
	call("GET", "/api/v1/actions/nothing", "", "", nil, 404)
	call("DELETE", "/api/v1/actions/hello_world", "", "", nil, 204)
	call("DELETE", "/api/v1/actions/hello_world", "", "", nil, 404)

	// The server.
	call("GET", "/api/v1/backup", "", "", nil, 200)
	call("GET", "/api/v1/backup", memberToken, "", nil, 403)
	call("GET", "/api/v1/status", "", "", nil, 200)
	call("GET", "/api/v1/status", memberToken, "", nil, 403)
	call("GET", "/api/v1/openapi.json", "-", "", nil, 200)

	// Every operation answered at least once with success, and all but
	// the document itself once with an error.
	doc := loadOpenAPI(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			got := v.seen[op.OperationID]
			ok, failed := false, false
			for _, st := range got {
				ok = ok || st < 300
				failed = failed || st >= 400
			}
			if !ok || (!failed && op.OperationID != "openapi") {
				t.Errorf("%s %s (%s): answered %v; want a success and an error", method, path, op.OperationID, got)
			}
		}
	}
}
