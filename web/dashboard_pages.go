package web

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// The dashboard's pages and the JSON its script asks for. Each calls the
// same actions.Service method as the REST route for the same thing.

// handleDoors is "/": every device the person may see, with its buttons.
func (s *server) handleDoors(c echo.Context) error {
	devices, err := s.svc.Devices(principal(c))
	if err != nil {
		return s.pageError(c, err)
	}
	return s.render(c, http.StatusOK, "doors", "Doors and lights", map[string]any{"Devices": devices})
}

// handleDeviceRow is the card of one device, for the script to put in
// place when an event says the device changed.
func (s *server) handleDeviceRow(c echo.Context) error {
	d, err := s.svc.Device(principal(c), c.Param("id"))
	if err != nil {
		return err
	}
	var b strings.Builder
	if err := s.dash.pages["doors"].ExecuteTemplate(&b, "device", d); err != nil {
		return err
	}
	return c.HTML(http.StatusOK, b.String())
}

type devicePage struct {
	Device   actions.Device
	Commands []actions.Event
	Events   []actions.Event
	Pictures []actions.Stranger
}

func (s *server) handleDevicePage(c echo.Context) error {
	p := principal(c)
	d, err := s.svc.Device(p, c.Param("id"))
	if err != nil {
		return s.pageError(c, err)
	}
	page := devicePage{Device: d}
	if page.Events, _, err = s.svc.Events(p, actions.EventQuery{Device: d.ID, Limit: 20}); err != nil {
		return s.pageError(c, err)
	}
	if page.Commands, _, err = s.svc.Events(p, actions.EventQuery{Device: d.ID, Type: actions.EventCommand, Limit: 10}); err != nil {
		return s.pageError(c, err)
	}
	if d.Kind == actions.KindCamera {
		all, _, err := s.svc.Strangers(p, actions.StrangerQuery{Limit: 200})
		if err != nil {
			return s.pageError(c, err)
		}
		for _, st := range all {
			if st.Device == d.ID && len(page.Pictures) < 12 {
				page.Pictures = append(page.Pictures, st)
			}
		}
	}
	return s.render(c, http.StatusOK, "device", d.Name, page)
}

func (s *server) handleDeviceRename(c echo.Context) error {
	id := c.Param("id")
	name := strings.TrimSpace(c.FormValue("name"))
	_, err := s.svc.UpdateDevice(principal(c), id, actions.DevicePatch{Name: &name})
	return s.done(c, "/devices/"+url.PathEscape(id), err, "Renamed to "+name+".")
}

func (s *server) handleDeviceRemove(c echo.Context) error {
	id := c.Param("id")
	if err := s.svc.DeleteDevice(principal(c), id); err != nil {
		return s.done(c, "/devices/"+url.PathEscape(id), err, "")
	}
	return s.done(c, "/", nil, "Deleted "+id+".")
}

// handleDashCommand sends a command and answers at once with it (status
// sent); the script then follows it with handleDashCommandGet. A refusal
// is an error in words ("device \"door1\" is offline").
func (s *server) handleDashCommand(c echo.Context) error {
	verb := c.Param("verb")
	if !verbs[verb] {
		return echo.ErrNotFound
	}
	cmd, err := s.svc.SendCommand(principal(c), c.Param("id"), verb, actions.ViaREST)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, cmd)
}

// handleDashCommandGet waits up to 25 s for a command to leave "sent".
func (s *server) handleDashCommandGet(c echo.Context) error {
	cmd, err := s.svc.Command(principal(c), c.Param("id"))
	if err != nil {
		return err
	}
	if cmd.Status == actions.StatusSent {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 25*time.Second)
		defer cancel()
		if cmd, err = s.svc.Wait(ctx.Done(), cmd.ID); err != nil {
			return err
		}
	}
	return c.JSON(http.StatusOK, cmd)
}

// handleDashLockAll sends lock (or unlock) to every lock the person may
// operate and answers at once, one item per lock as REST lists them.
func (s *server) handleDashLockAll(c echo.Context) error {
	verb := strings.TrimPrefix(c.Path(), "/ui/")
	cmds, err := s.svc.SendAll(principal(c), verb, actions.ViaREST)
	if err != nil {
		return err
	}
	out := make([]result, len(cmds))
	for i, cmd := range cmds {
		out[i] = result(cmd)
	}
	return c.JSON(http.StatusOK, list[result]{Items: out})
}

// activityFilter is the activity page's form.
type activityFilter struct {
	Device, User, Type, Since, Until string
}

func (f activityFilter) Query(cursor string) string {
	v := url.Values{}
	for k, x := range map[string]string{"device": f.Device, "user": f.User, "type": f.Type, "since": f.Since, "until": f.Until, "cursor": cursor} {
		if x != "" {
			v.Set(k, x)
		}
	}
	return v.Encode()
}

type activityPage struct {
	Filter  activityFilter
	Events  []actions.Event
	Next    string // query of the older page, "" at the end
	First   bool
	Types   []string
	Devices []actions.Device
}

// eventTypes are the types the activity filter offers.
var eventTypes = []string{actions.EventCommand, actions.EventAck, actions.EventState, actions.EventOnline,
	actions.EventOffline, actions.EventHandShake, actions.EventStranger, actions.EventLoginRefused,
	actions.EventPairing, actions.EventScript, actions.EventAdmin}

// activityPageSize is how many events a page shows; activityScan bounds
// the events read to fill one page when filtering by person or time.
const (
	activityPageSize = 50
	activityScan     = 5000
)

func (s *server) handleActivity(c echo.Context) error {
	p := principal(c)
	f := activityFilter{Device: c.QueryParam("device"), User: c.QueryParam("user"), Type: c.QueryParam("type"),
		Since: c.QueryParam("since"), Until: c.QueryParam("until")}
	if f.Type != "" && !contains(eventTypes, f.Type) {
		return s.pageError(c, actions.Errorf(actions.EInvalid, "unknown event type %q", f.Type))
	}
	since, err := s.parseLocal(f.Since, "since")
	if err != nil {
		return s.pageError(c, err)
	}
	until, err := s.parseLocal(f.Until, "until")
	if err != nil {
		return s.pageError(c, err)
	}
	cursor := c.QueryParam("cursor")
	page := activityPage{Filter: f, First: cursor == "", Types: eventTypes}
	if page.Devices, err = s.svc.Devices(p); err != nil {
		return s.pageError(c, err)
	}
	// The person and the time are filtered here, a page of the log at a
	// time, and the cursor is the id of the last event shown, so paging
	// stays exact; newest first, so the scan stops at "since".
	for scanned := 0; len(page.Events) < activityPageSize && scanned < activityScan; {
		batch, next, err := s.svc.Events(p, actions.EventQuery{Device: f.Device, Type: f.Type, Limit: 200, Cursor: cursor})
		if err != nil {
			return s.pageError(c, err)
		}
		i, end := 0, false
		for ; i < len(batch) && len(page.Events) < activityPageSize; i++ {
			e := batch[i]
			scanned++
			if !since.IsZero() && e.Time.Before(since) {
				end = true
				break
			}
			cursor = e.ID
			if (f.User == "" || e.User == f.User) && (until.IsZero() || e.Time.Before(until)) {
				page.Events = append(page.Events, e)
			}
		}
		if end || (next == "" && i == len(batch)) {
			cursor = ""
			break
		}
	}
	if cursor != "" {
		page.Next = f.Query(cursor)
	}
	return s.render(c, http.StatusOK, "activity", "Activity", page)
}

// parseLocal reads a datetime-local ("2006-01-02T15:04") or a date in the
// server's time zone.
func (s *server) parseLocal(v, what string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, s.dash.loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, actions.Errorf(actions.EInvalid, "%s must be a date and time like 2026-12-01T09:00", what)
}

type picturesPage struct {
	Pictures []actions.Stranger
	Next     string
	First    bool
}

func (s *server) handlePictures(c echo.Context) error {
	cursor := c.QueryParam("cursor")
	list, next, err := s.svc.Strangers(principal(c), actions.StrangerQuery{Limit: 24, Cursor: cursor})
	if err != nil {
		return s.pageError(c, err)
	}
	return s.render(c, http.StatusOK, "pictures", "Pictures", picturesPage{Pictures: list, Next: next, First: cursor == ""})
}

// handleDashPictures lists the newest pictures, with fresh signed links,
// for the script to add the ones a live event announced.
func (s *server) handleDashPictures(c echo.Context) error {
	list, _, err := s.svc.Strangers(principal(c), actions.StrangerQuery{Limit: 10})
	if err != nil {
		return err
	}
	if list == nil {
		list = []actions.Stranger{}
	}
	return c.JSON(http.StatusOK, listOf(list, ""))
}

type backupPage struct{}

func (s *server) handleBackupPage(c echo.Context) error {
	if !principal(c).IsAdmin() {
		return s.pageError(c, actions.Errorf(actions.EForbidden, "only admins take backups"))
	}
	return s.render(c, http.StatusOK, "backup", "Backup", backupPage{})
}

// handleDashBackup is the download link of the backup page: the same
// handler as GET /api/v1/backup.
func (s *server) handleDashBackup(c echo.Context) error {
	if !principal(c).IsAdmin() {
		return s.pageError(c, actions.Errorf(actions.EForbidden, "only admins take backups"))
	}
	return s.handleBackup(c)
}

type scriptsPage struct {
	Scripts []actions.Script
	Script  *actions.Script
	Name    string
	Source  string
}

func (s *server) handleScriptsPage(c echo.Context) error {
	list, err := s.svc.Scripts(principal(c))
	if err != nil {
		return s.pageError(c, err)
	}
	return s.render(c, http.StatusOK, "scripts", "Scripts", scriptsPage{Scripts: list})
}

func (s *server) handleScriptPage(c echo.Context) error {
	sc, err := s.svc.Script(principal(c), c.Param("name"))
	if err != nil {
		return s.pageError(c, err)
	}
	return s.render(c, http.StatusOK, "scripts", sc.Name, scriptsPage{Script: &sc})
}

// handleScriptUpload stores the form's source (typed or from a file);
// a script that does not compile is shown again with the error.
func (s *server) handleScriptUpload(c echo.Context) error {
	p := principal(c)
	name := strings.TrimSpace(c.FormValue("name"))
	source := c.FormValue("source")
	if fh, err := c.FormFile("file"); err == nil && fh.Size > 0 {
		f, err := fh.Open()
		if err != nil {
			return s.pageError(c, actions.Errorf(actions.EInvalid, "could not read the file"))
		}
		b, err := io.ReadAll(io.LimitReader(f, actions.MaxScriptSource+1))
		f.Close()
		if err != nil {
			return s.pageError(c, actions.Errorf(actions.EInvalid, "could not read the file"))
		}
		source = string(b)
	}
	_, created, err := s.svc.PutScript(p, name, source, actions.ViaREST)
	if err != nil {
		list, _ := s.svc.Scripts(p)
		s.dash.setFlash(currentSession(c), &flash{Error: actions.ErrorMessage(err)})
		return s.render(c, statusOf[actions.ErrorCode(err)], "scripts", "Scripts", scriptsPage{Scripts: list, Name: name, Source: source})
	}
	verb := "Replaced"
	if created {
		verb = "Added"
	}
	return s.done(c, "/scripts", nil, verb+" script "+name+".")
}

func (s *server) handleScriptRemove(c echo.Context) error {
	name := c.Param("name")
	err := s.svc.DeleteScript(principal(c), name, actions.ViaREST)
	return s.done(c, "/scripts", err, "Deleted script "+name+".")
}
