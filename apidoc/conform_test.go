package apidoc

import (
	"strings"
	"testing"
)

// The checker the conformance tests rely on must notice what a client would trip over.
func TestCheckerFindsMismatches(t *testing.T) {
	t.Parallel()
	doc := Doc{Name: "t", JSON: []byte(`{"openapi":"3.0.3","paths":{"/things/{id}":{"get":{"responses":{
		"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Thing"}}}},
		"204":{"description":"none"}}}}},
	"components":{"schemas":{"Thing":{"type":"object","required":["id","tags"],"additionalProperties":false,"properties":{
		"id":{"type":"integer","minimum":1},"name":{"type":"string","nullable":true,"maxLength":3,"pattern":"\\S"},
		"kind":{"type":"string","enum":["a","b"]},"tags":{"type":"array","items":{"type":"string"}}}}}}}`)}
	c, err := NewChecker(doc)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		status int
		body   string
		want   string // "" when the answer conforms
	}{
		{200, `{"id":1,"tags":[],"name":null,"kind":"a"}`, ""},
		{204, ``, ""},
		{404, `{}`, "not documented"},
		{200, `{"id":1}`, `required field "tags"`},
		{200, `{"id":1.5,"tags":[]}`, "not an integer"},
		{200, `{"id":0,"tags":[]}`, "below the minimum"},
		{200, `{"id":1,"tags":[1]}`, "$.tags[0] is a number, not a string"},
		{200, `{"id":1,"tags":[],"extra":true}`, `field "extra"`},
		{200, `{"id":1,"tags":[],"kind":"c"}`, "not one of"},
		{200, `{"id":1,"tags":null}`, "null"},
		{200, `{"id":1,"tags":[],"name":"long"}`, "longer than"},
		{200, `{"id":1,"tags":[],"name":"  "}`, "does not match"},
		{200, `not json`, "not JSON"},
	}
	for _, tc := range cases {
		err := c.CheckAnswer("GET", "/things/{id}", tc.status, []byte(tc.body))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%d %s: %v, want it to conform", tc.status, tc.body, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%d %s: %v, want an error mentioning %q", tc.status, tc.body, err, tc.want)
		}
	}
	if err := c.CheckAnswer("POST", "/things/{id}", 200, nil); err == nil {
		t.Error("an undocumented operation passed")
	}
}
