package web

import (
	"cmp"
	"reflect"
	"strings"
)

// jsonFields returns the JSON names of the fields that decoding into v accepts, in
// declaration order, with embedded structs' fields in their place; nil when v is no
// pointer to a struct.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	return structFields(t, nil)
}

func structFields(t reflect.Type, names []string) []string {
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			names = structFields(ft, names)
			continue
		}
		if !f.IsExported() {
			continue
		}
		names = append(names, cmp.Or(name, f.Name))
	}
	return names
}
