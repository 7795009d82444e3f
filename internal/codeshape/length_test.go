package codeshape

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// maxLines is the most lines a production function may have, from its
// func keyword to its closing brace, without saying why.
const maxLines = 80

// reason is what a longer function's doc comment must contain, followed by
// why it is better left long (docs/design-notes.md §5).
const reason = "Longer than 80 lines"

// TestLongFunctionsSayWhy: every production function of the module longer
// than maxLines says why in its doc comment; the list, with each reason,
// is docs/design-notes.md §5.
func TestLongFunctionsSayWhy(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	long := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && skipDir(path, d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			if n <= maxLines {
				continue
			}
			long++
			if fd.Doc == nil || !strings.Contains(fd.Doc.Text(), reason) {
				t.Errorf("%s: %s is %d lines, longer than %d, and its doc comment does not say why: split it, or add %q and the reason (and list it in docs/design-notes.md §5)",
					fset.Position(fd.Pos()), funcName(fd), n, maxLines, reason+": …")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d production functions over %d lines", long, maxLines)
}

// skipDir reports whether the walk leaves out the directory at path named
// name: test data, hidden directories and other modules (tools).
func skipDir(path, name string) bool {
	if name == "testdata" || strings.HasPrefix(name, ".") || name == "vendor" {
		return true
	}
	_, err := os.Stat(filepath.Join(path, "go.mod"))
	return err == nil
}

// funcName is fd's name, with its receiver's type for a method.
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	switch x := t.(type) {
	case *ast.IndexExpr:
		t = x.X
	case *ast.IndexListExpr:
		t = x.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}
