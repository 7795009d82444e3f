package events

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/vmguard/vmguard/internal/termtext"
)

// ShortType returns entity.verb of a type, e.g. process.exited.
func ShortType(typ string) string {
	entity, verb, _, err := ParseType(typ)
	if err != nil {
		return typ
	}
	return entity + "." + verb
}

// Line returns the timeline line `vmguard events` prints for e: local
// time, sequence, what it is about, short type and Summary, with control
// characters escaped (termtext.Escape).
func (e Event) Line() string {
	about := e.Subject
	if sc, _ := ScopeOf(e.Type()); sc == ScopeNode || sc == ScopePlacement {
		about = "node/" + about
	} else if sc == ScopeCluster {
		about = "cluster"
	}
	line := fmt.Sprintf("%s %6d  %-14s %-26s %s", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Seq, about, ShortType(e.Type()), e.Summary())
	return termtext.Escape(strings.TrimRight(line, " "))
}

// Summary returns the key facts of e's data as "key=value" pairs in field
// order, leaving out empty fields, raw JSON and long lists. Strings are
// quoted when they hold spaces and escaped (termtext.Escape) otherwise: the
// summary holds no control characters, whatever a guest wrote.
func (e Event) Summary() string {
	if e.Data == nil {
		return ""
	}
	v := reflect.ValueOf(e.Data)
	t := v.Type()
	var parts []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		fv := v.Field(i)
		if fv.IsZero() && !alwaysShown(e.Data, name) {
			continue
		}
		if fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Uint8 {
			continue // raw JSON (the config) is too long for one line
		}
		if _, ok := e.Data.(ServiceRestarting); ok && name == "restarts_left" && fv.Int() < 0 {
			parts = append(parts, name+"=unlimited")
			continue
		}
		switch x := fv.Interface().(type) {
		case []string:
			parts = append(parts, fmt.Sprintf("%s=%d lines", name, len(x)))
		case time.Time:
			parts = append(parts, name+"="+x.UTC().Format(time.RFC3339Nano))
		case string:
			if strings.ContainsAny(x, " \t\"") {
				parts = append(parts, fmt.Sprintf("%s=%q", name, x))
			} else {
				parts = append(parts, name+"="+termtext.Escape(x))
			}
		default:
			parts = append(parts, fmt.Sprintf("%s=%v", name, x))
		}
	}
	return strings.Join(parts, " ")
}

// alwaysShown lists fields whose zero value says something.
func alwaysShown(p Payload, field string) bool {
	switch p.(type) {
	case ProcessExited:
		return field == "exit_code"
	case PackageSwitchingChanged:
		return field == "enabled"
	case ServiceRestarting:
		return field == "delay_ms" || field == "restarts_left"
	}
	return false
}
