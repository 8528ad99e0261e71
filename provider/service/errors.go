package service

import (
	"errors"
	"fmt"
)

// ErrInvalidAnnotation is the sentinel every annotation error wraps.
var ErrInvalidAnnotation = errors.New("invalid annotation")

// ErrInvalidSpec is the sentinel for Service spec values herald cannot use
// even though the apiserver accepted them.
var ErrInvalidSpec = errors.New("invalid service spec")

// AnnotationError names the annotation and value a user must fix.
type AnnotationError struct {
	Annotation string
	Value      string
	Reason     string
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q: %s", e.Annotation, e.Value, e.Reason)
}

func (e *AnnotationError) Unwrap() error { return ErrInvalidAnnotation }

// SpecError names the Service field a user must fix.
type SpecError struct {
	Field  string
	Value  string
	Reason string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("spec.%s=%q: %s", e.Field, e.Value, e.Reason)
}

func (e *SpecError) Unwrap() error { return ErrInvalidSpec }
