package apidoc

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Checker checks a server's answers against a document: the status must be one the
// operation documents, and a JSON body must match the documented schema. It reads the
// subset of OpenAPI 3.0 schemas the documents use: $ref, allOf, type, nullable, enum,
// required, properties, additionalProperties, items, minLength, maxLength, pattern,
// minimum and maximum.
type Checker struct {
	doc map[string]any
}

// NewChecker returns the checker of the document d. It returns an error when d is not
// JSON.
func NewChecker(d Doc) (*Checker, error) {
	var doc map[string]any
	if err := json.Unmarshal(d.JSON, &doc); err != nil {
		return nil, fmt.Errorf("decoding the %s document: %w", d.Name, err)
	}
	return &Checker{doc: doc}, nil
}

// CheckRequest checks a JSON request body against the operation's documented request
// schema: a body the server accepts must be one the document allows, and one it refuses
// for its content should be one the document refuses too. It returns an error naming the
// first mismatch, or the operation's lack of a JSON body.
func (c *Checker) CheckRequest(method, path string, body []byte) error {
	op, err := c.operation(method, path)
	if err != nil {
		return err
	}
	rb, _ := op["requestBody"].(map[string]any)
	content, _ := c.deref(rb)["content"].(map[string]any)
	media, _ := content["application/json"].(map[string]any)
	if media == nil {
		return fmt.Errorf("%s %s documents no JSON request body", method, path)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s %s: the request body is not JSON", method, path)
	}
	if err := c.Validate(media["schema"], v); err != nil {
		return fmt.Errorf("%s %s request: %w", method, path, err)
	}
	return nil
}

// CheckAnswer checks one answer of the operation: status must be documented (or a
// "default" answer present), and a body of a documented JSON answer must match its
// schema. It returns an error naming the first mismatch.
func (c *Checker) CheckAnswer(method, path string, status int, body []byte) error {
	op, err := c.operation(method, path)
	if err != nil {
		return err
	}
	responses, _ := op["responses"].(map[string]any)
	r, ok := responses[strconv.Itoa(status)]
	if !ok {
		if r, ok = responses["default"]; !ok {
			keys := make([]string, 0, len(responses))
			for k := range responses {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return fmt.Errorf("%s %s answered %d, which is not documented (documented: %s)", method, path, status, strings.Join(keys, ", "))
		}
	}
	resp := c.deref(r)
	content, _ := resp["content"].(map[string]any)
	media, _ := content["application/json"].(map[string]any)
	if media == nil || media["schema"] == nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s %s answered %d with a body that is not JSON: %q", method, path, status, truncate(body))
	}
	if err := c.Validate(media["schema"], v); err != nil {
		return fmt.Errorf("%s %s answered %d: %w; body %s", method, path, status, err, truncate(body))
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

func (c *Checker) operation(method, path string) (map[string]any, error) {
	paths, _ := c.doc["paths"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	if op == nil {
		return nil, fmt.Errorf("the document has no operation %s %s", method, path)
	}
	return op, nil
}

// deref returns the schema or object v, following a {"$ref": "#/..."}.
func (c *Checker) deref(v any) map[string]any {
	m, _ := v.(map[string]any)
	for m != nil {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = c.doc
		for _, seg := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			obj, _ := cur.(map[string]any)
			cur = obj[strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")]
		}
		m, _ = cur.(map[string]any)
	}
	return m
}

// Validate checks the decoded JSON value v against schema. It returns an error naming
// the first mismatch and where it is.
func (c *Checker) Validate(schema, v any) error {
	return c.validate("$", c.deref(schema), v)
}

func (c *Checker) validate(at string, s map[string]any, v any) error {
	if s == nil {
		return nil
	}
	for _, sub := range asList(s["allOf"]) {
		if err := c.validate(at, c.deref(sub), v); err != nil {
			return err
		}
	}
	if v == nil {
		if nullable, _ := s["nullable"].(bool); nullable || s["type"] == nil {
			return nil
		}
		return fmt.Errorf("%s is null, which the schema does not allow", at)
	}
	if enum := asList(s["enum"]); enum != nil && !slices.ContainsFunc(enum, func(e any) bool { return e == v }) {
		return fmt.Errorf("%s is %v, not one of %v", at, v, enum)
	}
	switch typ, _ := s["type"].(string); typ {
	case "":
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s is %s, not an object", at, kindOf(v))
		}
		return c.validateObject(at, s, obj)
	case "array":
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s is %s, not an array", at, kindOf(v))
		}
		for i, e := range list {
			if err := c.validate(fmt.Sprintf("%s[%d]", at, i), c.deref(s["items"]), e); err != nil {
				return err
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s is %s, not a string", at, kindOf(v))
		}
		n := float64(utf8.RuneCountInString(str))
		if min, ok := s["minLength"].(float64); ok && n < min {
			return fmt.Errorf("%s is shorter than %v characters", at, min)
		}
		if max, ok := s["maxLength"].(float64); ok && n > max {
			return fmt.Errorf("%s is longer than %v characters", at, max)
		}
		if p, ok := s["pattern"].(string); ok {
			re, err := regexp.Compile(p)
			if err != nil {
				return fmt.Errorf("%s: the schema's pattern %q does not compile: %w", at, p, err)
			}
			if !re.MatchString(str) {
				return fmt.Errorf("%s is %q, which does not match %q", at, str, p)
			}
		}
	case "integer", "number":
		num, ok := v.(float64)
		if !ok {
			return fmt.Errorf("%s is %s, not a number", at, kindOf(v))
		}
		if typ == "integer" && num != math.Trunc(num) {
			return fmt.Errorf("%s is %v, not an integer", at, num)
		}
		if min, ok := s["minimum"].(float64); ok && num < min {
			return fmt.Errorf("%s is %v, below the minimum %v", at, num, min)
		}
		if max, ok := s["maximum"].(float64); ok && num > max {
			return fmt.Errorf("%s is %v, above the maximum %v", at, num, max)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s is %s, not a boolean", at, kindOf(v))
		}
	default:
		return fmt.Errorf("%s: the schema's type %q is not one this checker knows", at, typ)
	}
	return nil
}

func (c *Checker) validateObject(at string, s map[string]any, obj map[string]any) error {
	for _, r := range asList(s["required"]) {
		name, _ := r.(string)
		if _, ok := obj[name]; !ok {
			return fmt.Errorf("%s lacks the required field %q", at, name)
		}
	}
	props, _ := s["properties"].(map[string]any)
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if p, ok := props[k]; ok {
			if err := c.validate(at+"."+k, c.deref(p), obj[k]); err != nil {
				return err
			}
			continue
		}
		switch extra := s["additionalProperties"].(type) {
		case bool:
			if !extra {
				return fmt.Errorf("%s has the field %q, which the schema does not declare", at, k)
			}
		case map[string]any:
			if err := c.validate(at+"."+k, c.deref(extra), obj[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
