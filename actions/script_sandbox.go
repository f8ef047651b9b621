package actions

import (
	"fmt"
	"math/bits"
	"runtime/metrics"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// The sandbox. Starlark has no I/O, no imports and, here, no recursion;
// the step and time limits stop loops. What it does not bound is memory:
// "x" * 10**9 is one step that allocates a gigabyte, and a string doubled
// forty times is a terabyte. So before a script is compiled, every
// operation that can make a value much larger than its operands is
// rewritten into a call of a guard that checks the size of the result
// before it exists:
//
//   - x + y, x * y, x % y, x | y, x << y and their augmented forms;
//   - x[k] and dict literals, whose errors print the key;
//   - the string methods join, replace and format, and list.extend;
//   - str, repr, print, fail, getattr and range, replaced.
//
// Guards refuse strings and bytes over maxScriptString, lists, tuples,
// dicts and sets over maxScriptElems elements, integers over maxScriptInt
// bits, and text whose printed form would be over maxScriptString (shared
// values count as often as they are printed). Everything else a step can
// allocate is bounded by these sizes, and the run's total allocation is
// checked every scriptCheckEvery steps (ScriptLimits.Memory). The guards'
// names start with '%', which no source can spell.
const (
	maxScriptString = 16 << 10
	maxScriptElems  = 10_000
	maxScriptInt    = 4096
)

// Guard names, as the rewriter calls them.
const (
	guardAdd   = "%add"
	guardMul   = "%mul"
	guardMod   = "%mod"
	guardOr    = "%or"
	guardShift = "%shift"
	guardIAdd  = "%iadd"
	guardIOr   = "%ior"
	guardIndex = "%index"
	guardDict  = "%dict"
	guardAttr  = "%attr"
)

// guardedMethods are the methods %attr wraps.
func guardedMethod(name string) bool {
	return name == "join" || name == "replace" || name == "format" || name == "extend"
}

// sandbox rewrites f in place (see above). It refuses an augmented
// assignment whose target would have to be evaluated twice.
func sandbox(f *syntax.File) error {
	r := &rewriter{}
	r.stmts(f.Stmts)
	return r.err
}

type rewriter struct{ err error }

func (r *rewriter) fail(pos syntax.Position, format string, args ...any) {
	if r.err == nil {
		r.err = syntax.Error{Pos: pos, Msg: fmt.Sprintf(format, args...)}
	}
}

func (r *rewriter) stmts(list []syntax.Stmt) {
	for _, st := range list {
		r.stmt(st)
	}
}

func (r *rewriter) stmt(st syntax.Stmt) {
	switch st := st.(type) {
	case *syntax.AssignStmt:
		if guard := augmentedGuard(st.Op); guard != "" {
			if !pure(st.LHS) {
				r.fail(st.OpPos, "%s needs a simple target here (a name, x.f or x[i]); write x = x %s y",
					st.Op, strings.TrimSuffix(st.Op.String(), "="))
				return
			}
			// x op= y  →  x = guard(x, y): same order of evaluation, since
			// the target has no effects.
			st.RHS = guardCall(guard, st.OpPos, clone(st.LHS), st.RHS)
			st.Op = syntax.EQ
		}
		r.target(st.LHS)
		st.RHS = r.expr(st.RHS)
	case *syntax.DefStmt:
		r.params(st.Params)
		r.stmts(st.Body)
	case *syntax.ExprStmt:
		st.X = r.expr(st.X)
	case *syntax.IfStmt:
		st.Cond = r.expr(st.Cond)
		r.stmts(st.True)
		r.stmts(st.False)
	case *syntax.ForStmt:
		r.target(st.Vars)
		st.X = r.expr(st.X)
		r.stmts(st.Body)
	case *syntax.WhileStmt:
		st.Cond = r.expr(st.Cond)
		r.stmts(st.Body)
	case *syntax.ReturnStmt:
		if st.Result != nil {
			st.Result = r.expr(st.Result)
		}
	case *syntax.BranchStmt, *syntax.LoadStmt:
	default:
		start, _ := st.Span()
		r.fail(start, "unsupported statement")
	}
}

// params rewrites default values (name=value is a BinaryExpr with EQ).
func (r *rewriter) params(params []syntax.Expr) {
	for _, p := range params {
		if b, ok := p.(*syntax.BinaryExpr); ok && b.Op == syntax.EQ {
			b.Y = r.expr(b.Y)
		}
	}
}

// target rewrites the expressions inside an assignment target, leaving the
// target itself assignable.
func (r *rewriter) target(e syntax.Expr) {
	switch e := e.(type) {
	case *syntax.ParenExpr:
		r.target(e.X)
	case *syntax.TupleExpr:
		for _, x := range e.List {
			r.target(x)
		}
	case *syntax.ListExpr:
		for _, x := range e.List {
			r.target(x)
		}
	case *syntax.IndexExpr:
		e.X = r.expr(e.X)
		e.Y = r.expr(e.Y)
	case *syntax.DotExpr:
		e.X = r.expr(e.X)
	}
}

func (r *rewriter) exprs(list []syntax.Expr) {
	for i, x := range list {
		list[i] = r.expr(x)
	}
}

func (r *rewriter) expr(e syntax.Expr) syntax.Expr {
	switch e := e.(type) {
	case *syntax.Ident, *syntax.Literal:
	case *syntax.ParenExpr:
		e.X = r.expr(e.X)
	case *syntax.BinaryExpr:
		// Also keyword arguments (k=v): their X is an Ident, left alone.
		e.X = r.expr(e.X)
		e.Y = r.expr(e.Y)
		if guard := binaryGuard(e.Op); guard != "" {
			return guardCall(guard, e.OpPos, e.X, e.Y)
		}
	case *syntax.UnaryExpr:
		if e.X != nil {
			e.X = r.expr(e.X)
		}
	case *syntax.CallExpr:
		e.Fn = r.expr(e.Fn)
		r.exprs(e.Args)
	case *syntax.DotExpr:
		e.X = r.expr(e.X)
		if guardedMethod(e.Name.Name) {
			return guardCall(guardAttr, e.Dot, e.X, &syntax.Literal{Token: syntax.STRING, TokenPos: e.NamePos,
				Raw: strconv.Quote(e.Name.Name), Value: e.Name.Name})
		}
	case *syntax.IndexExpr:
		e.X = r.expr(e.X)
		e.Y = r.expr(e.Y)
		return guardCall(guardIndex, e.Lbrack, e.X, e.Y)
	case *syntax.SliceExpr:
		e.X = r.expr(e.X)
		for _, p := range []*syntax.Expr{&e.Lo, &e.Hi, &e.Step} {
			if *p != nil {
				*p = r.expr(*p)
			}
		}
	case *syntax.ListExpr:
		r.exprs(e.List)
	case *syntax.TupleExpr:
		r.exprs(e.List)
	case *syntax.DictExpr:
		// {k: v, …}  →  %dict([k, v, …]): one argument, so no limit on
		// the number of entries.
		kv := &syntax.ListExpr{Lbrack: e.Lbrace, Rbrack: e.Rbrace}
		for _, x := range e.List {
			entry := x.(*syntax.DictEntry)
			kv.List = append(kv.List, r.expr(entry.Key), r.expr(entry.Value))
		}
		return guardCall(guardDict, e.Lbrace, kv)
	case *syntax.Comprehension:
		if entry, ok := e.Body.(*syntax.DictEntry); ok {
			entry.Key = r.expr(entry.Key)
			entry.Value = r.expr(entry.Value)
		} else {
			e.Body = r.expr(e.Body)
		}
		for _, c := range e.Clauses {
			switch c := c.(type) {
			case *syntax.ForClause:
				r.target(c.Vars)
				c.X = r.expr(c.X)
			case *syntax.IfClause:
				c.Cond = r.expr(c.Cond)
			}
		}
	case *syntax.CondExpr:
		e.Cond = r.expr(e.Cond)
		e.True = r.expr(e.True)
		e.False = r.expr(e.False)
	case *syntax.LambdaExpr:
		r.params(e.Params)
		e.Body = r.expr(e.Body)
	default:
		start, _ := e.Span()
		r.fail(start, "unsupported expression")
	}
	return e
}

func binaryGuard(op syntax.Token) string {
	switch op {
	case syntax.PLUS:
		return guardAdd
	case syntax.STAR:
		return guardMul
	case syntax.PERCENT:
		return guardMod
	case syntax.PIPE:
		return guardOr
	case syntax.LTLT:
		return guardShift
	}
	return ""
}

func augmentedGuard(op syntax.Token) string {
	switch op {
	case syntax.PLUS_EQ:
		return guardIAdd
	case syntax.STAR_EQ:
		return guardMul
	case syntax.PERCENT_EQ:
		return guardMod
	case syntax.PIPE_EQ:
		return guardIOr
	case syntax.LTLT_EQ:
		return guardShift
	}
	return ""
}

func guardCall(name string, pos syntax.Position, args ...syntax.Expr) *syntax.CallExpr {
	return &syntax.CallExpr{Fn: &syntax.Ident{NamePos: pos, Name: name}, Lparen: pos, Args: args, Rparen: pos}
}

// pure reports whether evaluating e twice is the same as once: a name, a
// constant, or fields and elements of those.
func pure(e syntax.Expr) bool {
	switch e := e.(type) {
	case *syntax.Ident, *syntax.Literal:
		return true
	case *syntax.ParenExpr:
		return pure(e.X)
	case *syntax.DotExpr:
		return pure(e.X)
	case *syntax.IndexExpr:
		return pure(e.X) && pure(e.Y)
	}
	return false
}

// clone copies a pure expression, so each copy gets its own resolution.
func clone(e syntax.Expr) syntax.Expr {
	switch e := e.(type) {
	case *syntax.Ident:
		return &syntax.Ident{NamePos: e.NamePos, Name: e.Name}
	case *syntax.Literal:
		c := *e
		return &c
	case *syntax.ParenExpr:
		return &syntax.ParenExpr{Lparen: e.Lparen, X: clone(e.X), Rparen: e.Rparen}
	case *syntax.DotExpr:
		return &syntax.DotExpr{X: clone(e.X), Dot: e.Dot, NamePos: e.NamePos,
			Name: &syntax.Ident{NamePos: e.Name.NamePos, Name: e.Name.Name}}
	case *syntax.IndexExpr:
		return &syntax.IndexExpr{X: clone(e.X), Lbrack: e.Lbrack, Y: clone(e.Y), Rbrack: e.Rbrack}
	}
	panic(fmt.Sprintf("clone of %T", e)) // pure said it was not
}

// sandboxPredeclared returns the guards and the replaced built-ins.
func sandboxPredeclared() starlark.StringDict {
	d := starlark.StringDict{}
	for name, fn := range map[string]func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error){
		guardAdd:   binaryBuiltin(syntax.PLUS, checkSum),
		guardMul:   binaryBuiltin(syntax.STAR, checkProduct),
		guardMod:   binaryBuiltin(syntax.PERCENT, checkPercent),
		guardOr:    binaryBuiltin(syntax.PIPE, checkUnion),
		guardShift: binaryBuiltin(syntax.LTLT, checkShift),
		guardIAdd:  inplaceAdd,
		guardIOr:   inplaceOr,
		guardIndex: index,
		guardDict:  dictLiteral,
		guardAttr:  attrBuiltin,
		"str":      textBuiltin("str"),
		"repr":     textBuiltin("repr"),
		"print":    textBuiltin("print"),
		"fail":     textBuiltin("fail"),
		"range":    rangeBuiltin,
		"getattr":  getattrBuiltin,
	} {
		d[name] = starlark.NewBuiltin(strings.TrimPrefix(name, "%"), fn)
	}
	return d
}

// twoArgs unpacks the two operands a guard is always called with.
func twoArgs(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (x, y starlark.Value, err error) {
	if len(args) != 2 || len(kwargs) != 0 {
		return nil, nil, fmt.Errorf("%s: want 2 operands", b.Name())
	}
	return args[0], args[1], nil
}

func binaryBuiltin(op syntax.Token, check func(x, y starlark.Value) error) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		x, y, err := twoArgs(b, args, kwargs)
		if err != nil {
			return nil, err
		}
		if err := check(x, y); err != nil {
			return nil, err
		}
		return starlark.Binary(op, x, y)
	}
}

func tooLong(what string, n, limit int, unit string) error {
	return sandboxErrorf("%s of %d %s is over the limit of %d", what, n, unit, limit)
}

func checkString(n int) error {
	if n > maxScriptString {
		return tooLong("string", n, maxScriptString, "bytes")
	}
	return nil
}

func checkElems(what string, n int) error {
	if n > maxScriptElems {
		return tooLong(what, n, maxScriptElems, "elements")
	}
	return nil
}

// intBits is the number of bits of |i|.
func intBits(i starlark.Int) int {
	if v, ok := i.Int64(); ok {
		if v < 0 {
			v = -v
		}
		return bits.Len64(uint64(v))
	}
	return i.BigInt().BitLen()
}

func checkInt(n int) error {
	if n > maxScriptInt {
		return tooLong("integer", n, maxScriptInt, "bits")
	}
	return nil
}

// checkSum: x + y.
func checkSum(x, y starlark.Value) error {
	switch x := x.(type) {
	case starlark.String:
		if y, ok := y.(starlark.String); ok {
			return checkString(len(x) + len(y))
		}
	case starlark.Bytes:
		if y, ok := y.(starlark.Bytes); ok {
			return checkString(len(x) + len(y))
		}
	case *starlark.List:
		if y, ok := y.(*starlark.List); ok {
			return checkElems("list", x.Len()+y.Len())
		}
	case starlark.Tuple:
		if y, ok := y.(starlark.Tuple); ok {
			return checkElems("tuple", len(x)+len(y))
		}
	}
	return nil
}

// checkProduct: x * y, a sequence repeated or two integers multiplied.
func checkProduct(x, y starlark.Value) error {
	if _, ok := x.(starlark.Int); ok {
		if _, ok := y.(starlark.Int); !ok {
			x, y = y, x
		}
	}
	n, ok := y.(starlark.Int)
	if !ok {
		return nil
	}
	if xi, ok := x.(starlark.Int); ok {
		return checkInt(intBits(xi) + intBits(n))
	}
	k, err := starlark.AsInt32(n)
	if err != nil || k <= 0 {
		return nil // Starlark refuses huge counts itself; the rest is empty
	}
	switch x := x.(type) {
	case starlark.String:
		return checkString(len(x) * k)
	case starlark.Bytes:
		return checkString(len(x) * k)
	case *starlark.List:
		return checkElems("list", x.Len()*k)
	case starlark.Tuple:
		return checkElems("tuple", len(x)*k)
	}
	return nil
}

// checkUnion: x | y.
func checkUnion(x, y starlark.Value) error {
	switch x := x.(type) {
	case *starlark.Dict:
		if y, ok := y.(*starlark.Dict); ok {
			return checkElems("dict", x.Len()+y.Len())
		}
	case *starlark.Set:
		if y, ok := y.(*starlark.Set); ok {
			return checkElems("set", x.Len()+y.Len())
		}
	}
	return nil
}

// checkShift: x << y.
func checkShift(x, y starlark.Value) error {
	xi, ok1 := x.(starlark.Int)
	yi, ok2 := y.(starlark.Int)
	if !ok1 || !ok2 {
		return nil
	}
	n, err := starlark.AsInt32(yi)
	if err != nil || n < 0 {
		return nil // Starlark refuses these itself
	}
	return checkInt(intBits(xi) + n)
}

// checkPercent: format % args for a string format; x % y for numbers.
func checkPercent(x, y starlark.Value) error {
	format, ok := x.(starlark.String)
	if !ok {
		return nil
	}
	repr := strings.Contains(string(format), "%r")
	need := len(format)
	switch y := y.(type) {
	case starlark.Tuple:
		for _, v := range y {
			n, ok := formatArgSize(v, repr, maxScriptString-need)
			if !ok {
				return errTextTooLong()
			}
			need += n
		}
	case *starlark.Dict:
		// %(name)s may use a value any number of times.
		uses, most := strings.Count(string(format), "%("), 0
		for _, v := range y.Entries() {
			n, ok := formatArgSize(v, repr, maxScriptString)
			if !ok {
				return errTextTooLong()
			}
			most = max(most, n)
		}
		need += uses * most
	default:
		n, ok := formatArgSize(y, repr, maxScriptString-need)
		if !ok {
			return errTextTooLong()
		}
		need += n
	}
	if need > maxScriptString {
		return errTextTooLong()
	}
	return nil
}

// formatArgSize is textSize for an argument of %: a float may be printed
// with %f, in up to 330 characters.
func formatArgSize(v starlark.Value, repr bool, limit int) (int, bool) {
	if _, ok := v.(starlark.Float); ok {
		return 330, 330 <= limit
	}
	return textSize(v, repr, limit)
}

func errTextTooLong() error {
	return sandboxErrorf("text over the limit of %d bytes", maxScriptString)
}

// inplaceAdd: x += y. A list grows in place, as in Starlark.
func inplaceAdd(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	x, y, err := twoArgs(b, args, kwargs)
	if err != nil {
		return nil, err
	}
	if list, ok := x.(*starlark.List); ok {
		if _, ok := y.(starlark.Iterable); ok {
			if err := checkElems("list", list.Len()+iterLen(y)); err != nil {
				return nil, err
			}
			extend, _ := list.Attr("extend")
			if _, err := starlark.Call(th, extend, starlark.Tuple{y}, nil); err != nil {
				return nil, err
			}
			return list, nil
		}
	}
	if err := checkSum(x, y); err != nil {
		return nil, err
	}
	return starlark.Binary(syntax.PLUS, x, y)
}

// inplaceOr: x |= y. A dict is updated in place, as in Starlark.
func inplaceOr(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	x, y, err := twoArgs(b, args, kwargs)
	if err != nil {
		return nil, err
	}
	if err := checkUnion(x, y); err != nil {
		return nil, err
	}
	if d, ok := x.(*starlark.Dict); ok {
		if _, ok := y.(*starlark.Dict); ok {
			update, _ := d.Attr("update")
			if _, err := starlark.Call(th, update, starlark.Tuple{y}, nil); err != nil {
				return nil, err
			}
			return d, nil
		}
	}
	return starlark.Binary(syntax.PIPE, x, y)
}

// iterLen is the number of elements of an iterable, counted up to just
// past maxScriptElems when it does not say.
func iterLen(v starlark.Value) int {
	if n := starlark.Len(v); n >= 0 {
		return n
	}
	it := starlark.Iterate(v)
	if it == nil {
		return 0
	}
	defer it.Done()
	n := 0
	var x starlark.Value
	for n <= maxScriptElems && it.Next(&x) {
		n++
	}
	return n
}

// checkKey refuses dict keys whose hashing and printing would not be small:
// tuples nested and shared can stand for far more than their memory.
func checkKey(k starlark.Value) error {
	if _, ok := k.(starlark.Tuple); !ok {
		return nil
	}
	if _, ok := reprSize(k, maxScriptString); !ok {
		return sandboxErrorf("dict key over the limit of %d bytes", maxScriptString)
	}
	return nil
}

// index: x[k], as Starlark does it, but with the key printed short.
func index(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	x, y, err := twoArgs(b, args, kwargs)
	if err != nil {
		return nil, err
	}
	switch x := x.(type) {
	case starlark.Mapping:
		if err := checkKey(y); err != nil {
			return nil, err
		}
		z, found, err := x.Get(y)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("key %s not in %s", shortRepr(y), x.Type())
		}
		return z, nil
	case starlark.Indexable:
		n := x.Len()
		i, err := starlark.AsInt32(y)
		if err != nil {
			return nil, fmt.Errorf("%s index: %s", x.Type(), err)
		}
		orig := i
		if i < 0 {
			i += n
		}
		if i < 0 || i >= n {
			if n == 0 {
				return nil, fmt.Errorf("index %d out of range: empty %s", orig, x.Type())
			}
			return nil, fmt.Errorf("%s index %d out of range [%d:%d]", x.Type(), orig, -n, n-1)
		}
		return x.Index(i), nil
	}
	return nil, fmt.Errorf("unhandled index operation %s[%s]", x.Type(), y.Type())
}

// dictLiteral: {k: v, …}, from the flat list [k, v, …].
func dictLiteral(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var kv *starlark.List
	if len(args) == 1 && len(kwargs) == 0 {
		kv, _ = args[0].(*starlark.List)
	}
	if kv == nil || kv.Len()%2 != 0 {
		return nil, fmt.Errorf("%s: want a list of keys and values", b.Name())
	}
	d := starlark.NewDict(kv.Len() / 2)
	for i := 0; i < kv.Len(); i += 2 {
		k := kv.Index(i)
		if err := checkKey(k); err != nil {
			return nil, err
		}
		if _, found, err := d.Get(k); err != nil {
			return nil, err
		} else if found {
			return nil, fmt.Errorf("duplicate key: %s", shortRepr(k))
		}
		if err := d.SetKey(k, kv.Index(i+1)); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// lookupAttr returns x.name, nil when there is no such attribute, and the
// guarded method for the methods that can build big values.
func lookupAttr(x starlark.Value, name string) (starlark.Value, error) {
	ha, ok := x.(starlark.HasAttrs)
	if !ok {
		return nil, nil
	}
	v, err := ha.Attr(name)
	if err != nil || v == nil {
		if _, missing := err.(starlark.NoSuchAttrError); missing {
			err = nil
		}
		return nil, err
	}
	switch x.(type) {
	case starlark.String:
		switch name {
		case "join":
			return starlark.NewBuiltin(name, stringJoin).BindReceiver(x), nil
		case "replace":
			return starlark.NewBuiltin(name, stringReplace).BindReceiver(x), nil
		case "format":
			return starlark.NewBuiltin(name, stringFormat).BindReceiver(x), nil
		}
	case *starlark.List:
		if name == "extend" {
			return starlark.NewBuiltin(name, listExtend).BindReceiver(x), nil
		}
	}
	return v, nil
}

// attrBuiltin: x.join, x.replace, x.format, x.extend.
func attrBuiltin(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	x, n, err := twoArgs(b, args, kwargs)
	if err != nil {
		return nil, err
	}
	name, _ := starlark.AsString(n)
	v, err := lookupAttr(x, name)
	if err == nil && v == nil {
		err = fmt.Errorf("%s has no .%s field or method", x.Type(), name)
	}
	return v, err
}

// getattrBuiltin replaces getattr(x, name[, default]) so that it hands out
// the guarded methods too.
func getattrBuiltin(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		x, dflt starlark.Value
		name    string
	)
	if err := starlark.UnpackPositionalArgs("getattr", args, kwargs, 2, &x, &name, &dflt); err != nil {
		return nil, err
	}
	v, err := lookupAttr(x, name)
	switch {
	case err != nil:
		return nil, err
	case v != nil:
		return v, nil
	case dflt != nil:
		return dflt, nil
	}
	return nil, fmt.Errorf("getattr: %s has no .%s field or method", x.Type(), name)
}

// callMethod calls the real method name of the receiver of b.
func callMethod(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	m, err := b.Receiver().(starlark.HasAttrs).Attr(b.Name())
	if err != nil {
		return nil, err
	}
	return starlark.Call(th, m, args, kwargs)
}

// stringJoin: sep.join(iterable).
func stringJoin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	sep := b.Receiver().(starlark.String)
	if len(args) == 1 && len(kwargs) == 0 {
		if it := starlark.Iterate(args[0]); it != nil {
			need, count := 0, 0
			var x starlark.Value
			for it.Next(&x) && need <= maxScriptString {
				if s, ok := x.(starlark.String); ok {
					need += len(s)
				}
				if count > 0 {
					need += len(sep)
				}
				count++
			}
			it.Done()
			if err := checkString(need); err != nil {
				return nil, err
			}
		}
	}
	return callMethod(th, b, args, kwargs)
}

// stringReplace: s.replace(old, new[, count]).
func stringReplace(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	s := string(b.Receiver().(starlark.String))
	var (
		old, repl string
		count     = -1
	)
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 2, &old, &repl, &count); err == nil && len(repl) > len(old) {
		k := strings.Count(s, old) // for "", one more than the runes
		if count >= 0 {
			k = min(k, count)
		}
		if err := checkString(len(s) + k*(len(repl)-len(old))); err != nil {
			return nil, err
		}
	}
	return callMethod(th, b, args, kwargs)
}

// stringFormat: format.format(*args, **kwargs); each {} may use any
// argument, any number of times.
func stringFormat(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	format := string(b.Receiver().(starlark.String))
	repr := strings.Contains(format, "!r")
	most := 0
	for _, v := range args {
		n, ok := textSize(v, repr, maxScriptString)
		if !ok {
			return nil, errTextTooLong()
		}
		most = max(most, n)
	}
	for _, kv := range kwargs {
		n, ok := textSize(kv[1], repr, maxScriptString)
		if !ok {
			return nil, errTextTooLong()
		}
		most = max(most, n)
	}
	if len(format)+strings.Count(format, "{")*most > maxScriptString {
		return nil, errTextTooLong()
	}
	return callMethod(th, b, args, kwargs)
}

// listExtend: list.extend(iterable).
func listExtend(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if len(args) == 1 {
		if err := checkElems("list", b.Receiver().(*starlark.List).Len()+iterLen(args[0])); err != nil {
			return nil, err
		}
	}
	return callMethod(th, b, args, kwargs)
}

// textBuiltin replaces str, repr, print and fail: each prints its
// arguments, which must fit in maxScriptString first.
func textBuiltin(name string) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	repr := name == "repr"
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		left, sep := maxScriptString, 1
		for _, kv := range kwargs {
			if s, ok := kv[1].(starlark.String); ok && kv[0] == starlark.String("sep") {
				sep = len(s)
			}
		}
		for _, v := range args {
			n, ok := textSize(v, repr, left)
			if !ok {
				return nil, errTextTooLong()
			}
			left -= n + sep
		}
		return starlark.Call(th, starlark.Universe[name], args, kwargs)
	}
}

// rangeBuiltin replaces range: a range is lazy, but list(range(10**9)) is
// not, so ranges are as long as lists may be.
func rangeBuiltin(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	r, err := starlark.Call(th, starlark.Universe["range"], args, kwargs)
	if err != nil {
		return nil, err
	}
	if err := checkElems("range", starlark.Len(r)); err != nil {
		return nil, err
	}
	return r, nil
}

// shortRepr prints v for an error message, or only its type when long.
func shortRepr(v starlark.Value) string {
	if _, ok := reprSize(v, 100); ok {
		return v.String()
	}
	return "a " + v.Type()
}

// textSize returns the length of str(v) (repr(v) when repr is set) when it
// is at most limit; false otherwise.
func textSize(v starlark.Value, repr bool, limit int) (int, bool) {
	if s, ok := v.(starlark.String); ok && !repr {
		return len(s), len(s) <= limit
	}
	return reprSize(v, limit)
}

// reprSize returns an upper bound of len(repr(v)) when it is at most
// limit; false otherwise. Shared values count each time they are printed,
// so the walk stops after about limit elements whatever the structure.
func reprSize(v starlark.Value, limit int) (int, bool) {
	z := sizer{left: limit}
	if !z.repr(v) {
		return 0, false
	}
	return limit - z.left, true
}

type sizer struct {
	left int
	path map[starlark.Value]bool // lists, dicts and sets being printed: cycles print as [...]
}

func (z *sizer) add(n int) bool {
	z.left -= n
	return z.left >= 0
}

func (z *sizer) enter(v starlark.Value) bool {
	if z.path[v] {
		return false
	}
	if z.path == nil {
		z.path = map[starlark.Value]bool{}
	}
	z.path[v] = true
	return true
}

func (z *sizer) leave(v starlark.Value) { delete(z.path, v) }

func (z *sizer) repr(v starlark.Value) bool {
	if z.left < 0 {
		return false
	}
	switch v := v.(type) {
	case starlark.String:
		if len(v)+2 > z.left {
			z.left = -1
			return false
		}
		return z.add(quotedLen(string(v)))
	case starlark.Bytes:
		if len(v)+3 > z.left {
			z.left = -1
			return false
		}
		return z.add(4*len(v) + 3)
	case starlark.Int:
		return z.add(intBits(v)/3 + 2) // octal is the longest of %d, %o, %x
	case starlark.Float:
		return z.add(32)
	case starlark.Tuple:
		if !z.add(2) {
			return false
		}
		for _, e := range v {
			if !z.add(2) || !z.repr(e) {
				return false
			}
		}
		return true
	case *starlark.List:
		if !z.enter(v) {
			return z.add(5)
		}
		defer z.leave(v)
		if !z.add(2) {
			return false
		}
		for e := range v.Elements() {
			if !z.add(2) || !z.repr(e) {
				return false
			}
		}
		return true
	case *starlark.Dict:
		if !z.enter(v) {
			return z.add(5)
		}
		defer z.leave(v)
		if !z.add(2) {
			return false
		}
		for k, e := range v.Entries() {
			if !z.add(4) || !z.repr(k) || !z.repr(e) {
				return false
			}
		}
		return true
	case *starlark.Set:
		if !z.enter(v) {
			return z.add(10)
		}
		defer z.leave(v)
		if !z.add(7) {
			return false
		}
		for e := range v.Elements() {
			if !z.add(2) || !z.repr(e) {
				return false
			}
		}
		return true
	}
	// None, bools, functions, ranges, records: short, or made of short
	// parts the script cannot grow.
	return z.add(len(v.String()))
}

// quotedLen bounds the length of a string as Starlark quotes it.
func quotedLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 4 // \xHH
		case r == '"' || r == '\\':
			n += 2
		case r < 0x20 || r == 0x7f:
			n += 4
		case r < 0x80 || unicode.IsPrint(r):
			n += size
		case r < 0x10000:
			n += 6 // \uHHHH
		default:
			n += 10 // \UHHHHHHHH
		}
		i += size
	}
	return n
}

// heapAllocs is the number of bytes the process has allocated so far.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
