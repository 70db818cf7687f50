// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library
// Flux, kpt and other GitOps tools judge health with) computes for Kubernetes objects.
//
// It reads one JSON object, or a List of them (what `kubectl get -o json` prints), on stdin
// and prints a JSON array with one entry per object:
//
//	[{"kind": "Rollout", "name": "r", "status": "InProgress", "message": "..."}]
//
// It is a test tool of otau-operator (built by hack/tools.sh), not part of the operator.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	var object map[string]any
	// Numbers as int64 where they are whole, as the apiserver's clients decode them.
	if err := utiljson.Unmarshal(data, &object); err != nil {
		return fmt.Errorf("stdin is not a JSON object: %w", err)
	}
	objects := []map[string]any{object}
	if items, ok := object["items"].([]any); ok {
		objects = objects[:0]
		for i, item := range items {
			o, ok := item.(map[string]any)
			if !ok {
				return fmt.Errorf("items[%d] is not an object", i)
			}
			objects = append(objects, o)
		}
	}
	results := make([]result, 0, len(objects))
	for _, o := range objects {
		u := &unstructured.Unstructured{Object: o}
		computed, err := status.Compute(u)
		if err != nil {
			return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		}
		results = append(results, result{
			Kind:    u.GetKind(),
			Name:    u.GetName(),
			Status:  computed.Status.String(),
			Message: computed.Message,
		})
	}
	encoder := json.NewEncoder(out)
	encoder.SetIndent("", "  ")
	return encoder.Encode(results)
}
