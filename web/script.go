package web

import (
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// Scripts are sent and served as their Starlark source, text/plain; the
// metadata is JSON.

func (s *server) handleScriptList(c echo.Context) error {
	scripts, err := s.svc.Scripts(principal(c))
	if err != nil {
		return err
	}
	if scripts == nil {
		scripts = []actions.Script{}
	}
	return c.JSON(http.StatusOK, list[actions.Script]{Items: scripts})
}

func (s *server) handleScriptGet(c echo.Context) error {
	sc, err := s.svc.Script(principal(c), c.Param("name"))
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, echo.MIMETextPlainCharsetUTF8, []byte(sc.Source))
}

// handleScriptPut compiles and stores the body as the script: 201 when the
// name is new, 200 when it replaces a script; a syntax error is a 400 that
// names the line.
func (s *server) handleScriptPut(c echo.Context) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err // past the body limit: 413
	}
	sc, created, err := s.svc.PutScript(principal(c), c.Param("name"), string(body), actions.ViaREST)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, sc)
}

func (s *server) handleScriptDelete(c echo.Context) error {
	if err := s.svc.DeleteScript(principal(c), c.Param("name"), actions.ViaREST); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
