package web

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

// authenticateDevice admits a device by HTTP Basic id:secret.
func (s *server) authenticateDevice(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, secret, ok := c.Request().BasicAuth()
		if !ok {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="gatehouse devices"`)
			return actions.Errorf(actions.EUnauthorized, "device id and secret required (HTTP Basic)")
		}
		p, err := s.svc.AuthenticateDevice(id, secret, c.Request().RemoteAddr)
		if err != nil {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="gatehouse devices"`)
			return err
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

// Upload and download limits of pictures.
const (
	// DefaultUploadTimeout is how long a client has to send a picture's
	// body, once its headers are in.
	DefaultUploadTimeout = 30 * time.Second
	// maxRanges is the most byte ranges a picture request may ask for; a
	// request for more is answered with the whole picture, so that tiny
	// ranges cannot turn one picture into a response many times its size.
	maxRanges = 4
)

// readPicture reads the request body, raw or as the first file of a
// multipart form, refusing more than the cap: at once when the declared
// length is over it, as soon as the cap is passed otherwise, so no more
// than the cap is ever held. The body must arrive within the upload
// timeout (a read deadline on the connection), so a slow sender cannot
// hold a request and its memory for long.
func (s *server) readPicture(c echo.Context, multipartOK bool) ([]byte, string, error) {
	r := c.Request()
	tooBig := echo.NewHTTPError(http.StatusRequestEntityTooLarge, "picture larger than "+strconv.FormatInt(s.maxPicture>>20, 10)+" MiB")
	if r.ContentLength > s.maxPicture {
		return nil, "", tooBig
	}
	if err := http.NewResponseController(c.Response()).SetReadDeadline(time.Now().Add(s.uploadTimeout)); err != nil {
		s.log.Debug("picture upload without a read deadline", "error", err)
	}
	r.Body = http.MaxBytesReader(c.Response(), r.Body, s.maxPicture)
	ct, params, _ := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	var body io.Reader = r.Body
	if multipartOK && ct == "multipart/form-data" {
		part, err := multipartReader(r, params["boundary"])
		if err != nil {
			return nil, "", uploadError(err, tooBig, s.uploadTimeout)
		}
		body, ct = part, ""
		if pct, _, err := mime.ParseMediaType(part.Header.Get(echo.HeaderContentType)); err == nil {
			ct = pct
		}
	}
	// Room for the declared length and the read that finds the end, so a
	// body of known length is read without copying.
	data := make([]byte, 0, min(max(r.ContentLength, 0), s.maxPicture)+1)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := body.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			return data, ct, nil
		}
		if err != nil {
			return nil, "", uploadError(err, tooBig, s.uploadTimeout)
		}
	}
}

// uploadError is the answer to a picture body that could not be read.
func uploadError(err error, tooBig *echo.HTTPError, timeout time.Duration) error {
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &maxBytes):
		return tooBig
	case errors.Is(err, os.ErrDeadlineExceeded):
		return echo.NewHTTPError(http.StatusRequestTimeout, "picture not sent within "+timeout.String())
	case actions.ErrorCode(err) == actions.EInvalid:
		return err
	}
	return actions.Errorf(actions.EInvalid, "could not read the picture")
}

// multipartReader returns the first file part of a multipart body.
func multipartReader(r *http.Request, boundary string) (*multipart.Part, error) {
	if boundary == "" {
		return nil, actions.Errorf(actions.EInvalid, "multipart body without boundary")
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, actions.Errorf(actions.EInvalid, "invalid multipart body")
	}
	for {
		part, err := mr.NextPart()
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) || errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, err
		}
		if err != nil {
			return nil, actions.Errorf(actions.EInvalid, "multipart body has no file")
		}
		if part.FileName() != "" || part.FormName() == "file" || part.FormName() == "picture" {
			return part, nil // its file name is ignored: nothing from the client names anything
		}
	}
}

func uploadTime(c echo.Context) time.Time {
	if v := c.QueryParam("time"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Unix(n, 0)
		}
	}
	return time.Time{}
}

// handleStrangerUpload is POST /api/v1/strangers and the prototype's
// POST /upload (which also takes multipart): a camera's picture.
func (s *server) handleStrangerUpload(c echo.Context) error {
	data, declared, err := s.readPicture(c, c.Path() == "/upload")
	if err != nil {
		return err
	}
	// The type is the bytes'; a client that says it sends another one
	// sends something else than it thinks (or than it claims).
	if actions.PictureType(declared) {
		typ, err := actions.SniffPicture(data)
		if err != nil {
			return err
		}
		if typ != declared {
			return echo.NewHTTPError(http.StatusUnsupportedMediaType, "the body is "+typ+", not "+declared+" as its Content-Type says")
		}
	}
	st, err := s.svc.AddStranger(principal(c), uploadTime(c), data, actions.ViaREST)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, st)
}

func (s *server) handleStrangerList(c echo.Context) error {
	limit, cursor, err := pageParams(c)
	if err != nil {
		return err
	}
	list, next, err := s.svc.Strangers(principal(c), actions.StrangerQuery{Limit: limit, Cursor: cursor})
	if err != nil {
		return err
	}
	if list == nil {
		list = []actions.Stranger{}
	}
	return c.JSON(http.StatusOK, listOf(list, next))
}

func listOf[T any](items []T, next string) list[T] { return list[T]{Items: items, Next: next} }

// handlePicture serves a picture to a holder of a valid signed link, or to
// a bearer who may see it.
func (s *server) handlePicture(c echo.Context) error {
	id := c.Param("id")
	var st actions.Stranger
	var data []byte
	var err error
	if c.QueryParam("sig") != "" {
		if err := s.svc.CheckLink(id, c.QueryParam("exp"), c.QueryParam("sig")); err != nil {
			return actions.Errorf(actions.EForbidden, "%s", actions.ErrorMessage(err))
		}
		st, data, err = s.svc.Picture(nil, id)
	} else {
		if err := s.authenticate(func(echo.Context) error { return nil })(c); err != nil {
			return err
		}
		p := principal(c)
		st, data, err = s.svc.Picture(&p, id)
	}
	if err != nil {
		return err
	}
	return servePicture(c, st, data, "private, max-age=31536000, immutable")
}

// handleLatestPicture is the prototype's GET /get_pic.
func (s *server) handleLatestPicture(c echo.Context) error {
	st, data, err := s.svc.LatestPicture(principal(c))
	if err != nil {
		return err
	}
	return servePicture(c, st, data, "private, no-cache") // the latest changes; its ETag still validates
}

// servePicture answers with an immutable picture: ETag, Cache-Control,
// type and length, conditional requests and ranges from net/http.
func servePicture(c echo.Context, st actions.Stranger, data []byte, cache string) error {
	if r := c.Request(); strings.Count(r.Header.Get("Range"), ",") >= maxRanges {
		r.Header.Del("Range") // more than maxRanges ranges: the whole picture (RFC 9110 §14.2)
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, st.Type)
	h.Set("ETag", `"`+st.ID+`"`)
	h.Set("Cache-Control", cache)
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(c.Response(), c.Request(), "", st.Time, bytes.NewReader(data))
	return nil
}
