package web

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPI is the OpenAPI 3.1 document of /api/v1, kept by hand next to
// routes and held to it by tests: its paths and methods are those of the
// route table (openapi_test.go), and the end-to-end tests validate their
// requests and answers against it (kin-openapi's openapi3filter).
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI document served at /api/v1/openapi.json.
func OpenAPI() []byte { return openAPI }

// handleOpenAPI serves the document, public like /hello.
func (s *server) handleOpenAPI(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, "application/json", openAPI)
}
