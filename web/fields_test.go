package web_test

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/web"
)

type blogInput struct {
	Title       string  `json:"title"`
	Description *string `json:"description,omitempty"`
	Internal    string  `json:"-"`
}

type patchInput struct {
	blogInput
	Tags []string `json:"tags"`
}

// An unknown field's error names the fields the endpoint accepts, so a client sees at
// once what it should have sent.
func TestUnknownFieldListsAcceptedFields(t *testing.T) {
	t.Parallel()
	cases := []struct {
		target func() any
		want   string
	}{
		{func() any { return &blogInput{} }, `unknown field "content"; accepted: title, description`},
		{func() any { return &patchInput{} }, `unknown field "content"; accepted: title, description, tags`},
	}
	for _, tc := range cases {
		r := gin.New()
		r.POST("/x", func(c *gin.Context) {
			if err := web.DecodeJSON(c, tc.target(), 0); err != nil {
				web.WriteError(c, slog.New(slog.DiscardHandler), err)
			}
		})
		w := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/x", strings.NewReader(`{"title":"t","content":"c"}`))
		req.Header.Set("Content-Type", "application/json")
		r.ServeHTTP(w, req)
		var body web.ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != 400 || body.Error.Code != "unknown_field" || body.Error.Message != tc.want {
			t.Errorf("got %d %s, want 400 unknown_field %q", w.Code, w.Body.String(), tc.want)
		}
	}
}
