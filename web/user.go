package web

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"gatehouse/actions"
)

type userCreateRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

type userCreateResponse struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Token   string `json:"token"`
	TokenID string `json:"token_id"`
}

func (s *server) handleUserCreate(c echo.Context) error {
	var req userCreateRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	u, t, secret, err := s.svc.CreateUser(principal(c), req.Name, req.Role)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, userCreateResponse{Name: u.Name, Role: u.Role, Token: secret, TokenID: t.ID})
}

func (s *server) handleUserList(c echo.Context) error {
	users, err := s.svc.Users(principal(c))
	if err != nil {
		return err
	}
	if users == nil {
		users = []actions.User{}
	}
	return c.JSON(http.StatusOK, list[actions.User]{Items: users})
}

func (s *server) handleUserDelete(c echo.Context) error {
	if err := s.svc.DeleteUser(principal(c), c.Param("name")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

type tokenCreateRequest struct {
	Name    string    `json:"name"`
	Expires time.Time `json:"expires"`
}

type tokenCreateResponse struct {
	actions.Token
	Secret string `json:"token"`
}

func (s *server) handleTokenCreate(c echo.Context) error {
	var req tokenCreateRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	t, secret, err := s.svc.CreateToken(principal(c), c.Param("name"), req.Name, req.Expires)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, tokenCreateResponse{Token: t, Secret: secret})
}

func (s *server) handleTokenList(c echo.Context) error {
	tokens, err := s.svc.Tokens(principal(c), c.Param("name"))
	if err != nil {
		return err
	}
	if tokens == nil {
		tokens = []actions.Token{}
	}
	return c.JSON(http.StatusOK, list[actions.Token]{Items: tokens})
}

func (s *server) handleTokenDelete(c echo.Context) error {
	if err := s.svc.RevokeToken(principal(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
