package api

import (
	"net/http/httptest"
	"testing"
)

func TestWSToken(t *testing.T) {
	t.Parallel()
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
	const other = "eyJvdGhlciI6MX0.eyJzdWIiOiIyIn0.b3RoZXI"
	cases := []struct {
		name     string
		query    string
		header   map[string]string
		tok      string
		protocol string
	}{
		{name: "none"},
		{name: "authorization bearer", header: map[string]string{"Authorization": "Bearer " + jwt}, tok: jwt},
		{name: "authorization scheme any case", header: map[string]string{"Authorization": "bearer  " + jwt + " "}, tok: jwt},
		{name: "authorization basic is ignored", header: map[string]string{"Authorization": "Basic dXNlcjpwdw=="}},
		{name: "empty bearer falls through to query", query: "token=" + jwt, header: map[string]string{"Authorization": "Bearer  "}, tok: jwt},
		{name: "subprotocol bearer and token", header: map[string]string{"Sec-WebSocket-Protocol": "bearer, " + jwt}, tok: jwt, protocol: "bearer"},
		{name: "subprotocol token first", header: map[string]string{"Sec-WebSocket-Protocol": jwt + ", bearer"}, tok: jwt, protocol: "bearer"},
		{name: "subprotocol token alone", header: map[string]string{"Sec-WebSocket-Protocol": jwt}, tok: jwt},
		{name: "subprotocol without token falls through to query", query: "token=" + jwt, header: map[string]string{"Sec-WebSocket-Protocol": "bearer"}, tok: jwt},
		{name: "token query parameter", query: "token=" + jwt, tok: jwt},
		{name: "query_string with token=", query: "query_string=token%3D" + jwt, tok: jwt},
		{name: "query_string with token= among others", query: "query_string=tenant%3Dacme%26token%3D" + jwt, tok: jwt},
		{name: "query_string holding the bare token", query: "query_string=" + jwt, tok: jwt},
		{name: "header wins over subprotocol", header: map[string]string{"Authorization": "Bearer " + jwt, "Sec-WebSocket-Protocol": "bearer, " + other}, tok: jwt},
		{name: "subprotocol wins over query", query: "token=" + other, header: map[string]string{"Sec-WebSocket-Protocol": "bearer, " + jwt}, tok: jwt, protocol: "bearer"},
		{name: "token wins over query_string", query: "query_string=token%3D" + other + "&token=" + jwt, tok: jwt},
		{name: "empty token parameter", query: "token=&tenant=acme"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", "/ws/notifications?"+tc.query, nil)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			tok, protocol := wsToken(r)
			if tok != tc.tok || protocol != tc.protocol {
				t.Fatalf("wsToken = (%q, %q), want (%q, %q)", tok, protocol, tc.tok, tc.protocol)
			}
		})
	}
}
