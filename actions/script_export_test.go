package actions

import "go.starlark.net/starlark"

// AddScriptBuiltin makes fn callable under name by the scripts s compiles
// from now on: tests use it to play a built-in that ignores cancellation.
func AddScriptBuiltin(s *Service, name string, fn func()) {
	s.scripts.predeclared[name] = starlark.NewBuiltin(name,
		func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
			fn()
			return starlark.None, nil
		})
}

// ScriptsStuck is how many given-up runs of s have not ended yet.
func ScriptsStuck(s *Service) int { return int(s.scripts.stuck.Load()) }

// ScriptSlots is how many runs may be under way at once, stuck included.
func ScriptSlots() int { return scriptSlots() }

// ScriptSlotsUsed is how many runs of s hold a slot now.
func ScriptSlotsUsed(s *Service) int { return len(s.scripts.running) }
