// Command argocd-health runs an Argo CD health check (a resource_customizations health.lua)
// over the cases of its health_test.yaml, in gopher-lua, the interpreter Argo CD uses, at the
// version Argo CD's go.mod pins, under the conditions Argo CD documents for a custom check:
//
//   - the object is the global `obj`, a Lua table made from the object as YAML reads it;
//   - the script gets Lua's base, table and package libraries only, as a check installed in
//     argocd-cm does (Argo CD adds a reduced `os` with time and date; this harness gives none,
//     so a script that needs it fails here, on the safe side), and, in a second run of every
//     case, gopher-lua's full set, as with resource.customizations.useOpenLibs: both runs must
//     give the expected result;
//   - one second at most;
//   - it returns a table with `status` (one of Argo CD's health codes) and `message`.
//
// Usage:
//
//	argocd-health [-script health.lua] DIR
//
// DIR holds health_test.yaml, whose inputPaths are relative to DIR; the script defaults to
// DIR/health.lua. One line per case; the exit status is 1 if any case differs, 2 on an error
// before the cases run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// HealthStatus is what a health check returns.
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// testFile is the layout of health_test.yaml: a list of inputPath and expected healthStatus.
type testFile struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

// validStatuses are Argo CD's health status codes.
var validStatuses = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

// libSets are the two library sets a health.lua may run with: argocd-cm's, and all of them.
var libSets = []struct {
	name    string
	allLibs bool
}{
	{"argocd-cm", false},
	{"open-libs", true},
}

func main() {
	script := flag.String("script", "", "the health.lua to run (default: DIR/health.lua)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [-script health.lua] DIR\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	dir := flag.Arg(0)
	if *script == "" {
		*script = filepath.Join(dir, "health.lua")
	}
	failed, err := run(*script, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(2)
	}
	if failed > 0 {
		fmt.Printf("%d case(s) failed\n", failed)
		os.Exit(1)
	}
}

// run checks every case of DIR/health_test.yaml and returns how many failed.
func run(scriptPath, dir string) (int, error) {
	source, err := os.ReadFile(scriptPath)
	if err != nil {
		return 0, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return 0, err
	}
	var tests testFile
	if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
		return 0, fmt.Errorf("health_test.yaml: %w", err)
	}
	if len(tests.Tests) == 0 {
		return 0, errors.New("health_test.yaml has no tests")
	}
	failed := 0
	for _, tc := range tests.Tests {
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		if err != nil {
			return 0, err
		}
		var problems []string
		var got HealthStatus
		for _, libs := range libSets {
			res, err := check(obj, string(source), libs.allLibs)
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("[%s] error: %v", libs.name, err))
			case *res != tc.HealthStatus:
				problems = append(problems, fmt.Sprintf("[%s] got %s %q", libs.name, res.Status, res.Message))
			default:
				got = *res
			}
		}
		if len(problems) == 0 {
			fmt.Printf("ok    %s: %s %q\n", tc.InputPath, got.Status, got.Message)
			continue
		}
		failed++
		fmt.Printf("FAIL  %s: want %s %q", tc.InputPath, tc.HealthStatus.Status, tc.HealthStatus.Message)
		for _, p := range problems {
			fmt.Printf("; %s", p)
		}
		fmt.Println()
	}
	return failed, nil
}

// readObject reads a testdata object (YAML or JSON) into plain maps and slices.
func readObject(path string) (map[string]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

// check runs the script over obj and returns the status it gives.
func check(obj map[string]any, script string, allLibs bool) (*HealthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !allLibs})
	defer l.Close()
	if !allLibs {
		for _, lib := range []struct {
			name string
			open lua.LGFunction
		}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
			l.Push(l.NewFunction(lib.open))
			l.Push(lua.LString(lib.name))
			if err := l.PCall(1, 0, nil); err != nil {
				return nil, err
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	hs := &HealthStatus{Status: fieldString(result, "status"), Message: fieldString(result, "message")}
	if !validStatuses[hs.Status] {
		return nil, fmt.Errorf("the script returned status %q, not one of Argo CD's", hs.Status)
	}
	return hs, nil
}

func fieldString(t *lua.LTable, key string) string {
	if v, ok := t.RawGetString(key).(lua.LString); ok {
		return string(v)
	}
	return ""
}

// toLua turns a decoded YAML/JSON value into Lua: objects into tables keyed by string, lists
// into sequences from 1, numbers into Lua numbers, null into nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys) // a stable table for a stable run
		for _, k := range keys {
			t.RawSetString(k, toLua(l, v[k]))
		}
		return t
	}
	panic(fmt.Sprintf("toLua: unexpected %T", value))
}
