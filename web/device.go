package web

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

type deviceCreateRequest struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Name string `json:"name"`
}

type deviceCreateResponse struct {
	actions.Device
	Secret string `json:"secret"`
}

func (s *server) handleDeviceCreate(c echo.Context) error {
	var req deviceCreateRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	d, secret, err := s.svc.CreateDevice(principal(c), actions.NewDevice{ID: req.ID, Kind: req.Kind, Name: req.Name})
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, deviceCreateResponse{Device: d, Secret: secret})
}

func (s *server) handleDeviceList(c echo.Context) error {
	limit, cursor, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := s.svc.DevicePage(principal(c), cursor, limit)
	if err != nil {
		return err
	}
	out := list[actions.Device]{Items: items, Next: next}
	if out.Items == nil {
		out.Items = []actions.Device{}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleDeviceGet(c echo.Context) error {
	d, err := s.svc.Device(principal(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, d)
}

type devicePatchRequest struct {
	Name *string `json:"name"`
}

func (s *server) handleDevicePatch(c echo.Context) error {
	var req devicePatchRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	d, err := s.svc.UpdateDevice(principal(c), c.Param("id"), actions.DevicePatch{Name: req.Name})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, d)
}

func (s *server) handleDeviceDelete(c echo.Context) error {
	if err := s.svc.DeleteDevice(principal(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
