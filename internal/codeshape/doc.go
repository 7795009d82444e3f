// Package codeshape holds checks of the shape of vmguard's own Go code that
// a compiler or vet does not make (issue 14), run as its tests: no
// production function over 80 lines without the reason in its doc comment.
// It has no code for other packages to import.
package codeshape
