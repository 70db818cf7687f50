// Command argocd-lua runs Argo CD resource health checks and resource actions in Argo CD's own
// Lua runtime (github.com/argoproj/argo-cd/v3/util/lua: gopher-lua with Argo CD's library set,
// its safe os library and its one-second limit), the way an Argo CD server configured with the
// given argocd-cm data runs them.
//
//	argocd-lua ARGOCD_CM_FILE < requests.json > results.json
//
// ARGOCD_CM_FILE is a ConfigMap (or a patch of one) in YAML whose `data` holds the keys
// `resource.customizations.health.<group>_<kind>`, `resource.customizations.actions.<group>_<kind>`
// and `resource.customizations.useOpenLibs.<group>_<kind>` (Argo CD's split-key form). stdin is
// a JSON array of requests, each {"op": "health"|"discovery"|"action", "action": name, "object":
// {...}}; stdout is a JSON array with one result per request:
//
//	health:    {"status": "Progressing", "message": "..."}
//	discovery: {"actions": [{"name": "pause", "disabled": false}, ...]}   (sorted by name)
//	action:    {"objects": [{"operation": "patch", "object": {...}}]}
//
// A request the runtime refuses gives {"error": "..."} instead. It is a test tool of
// otau-operator (built by hack/tools.sh), not part of the operator.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

const prefix = "resource.customizations."

type request struct {
	Op     string         `json:"op"`
	Action string         `json:"action,omitempty"`
	Object map[string]any `json:"object"`
}

type discovered struct {
	Name     string `json:"name"`
	Disabled bool   `json:"disabled"`
}

type impacted struct {
	Operation string         `json:"operation"`
	Object    map[string]any `json:"object"`
}

type result struct {
	Error   string       `json:"error,omitempty"`
	Status  string       `json:"status,omitempty"`
	Message *string      `json:"message,omitempty"`
	Actions []discovered `json:"actions,omitempty"`
	Objects []impacted   `json:"objects,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua ARGOCD_CM_FILE < requests.json")
		os.Exit(2)
	}
	overrides, err := readOverrides(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua:", err)
		os.Exit(1)
	}
	var requests []request
	input, err := io.ReadAll(os.Stdin)
	if err == nil {
		// Numbers as int64 where they are whole, as Argo CD's clients decode objects.
		err = utiljson.Unmarshal(input, &requests)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua: stdin is not a JSON array of requests:", err)
		os.Exit(1)
	}
	results := make([]result, 0, len(requests))
	for _, r := range requests {
		results = append(results, handle(overrides, r))
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua:", err)
		os.Exit(1)
	}
}

// readOverrides turns argocd-cm's split keys into the ResourceOverrides Argo CD builds from them
// (keyed "<group>/<kind>", as lua.GetConfigMapKey looks them up).
func readOverrides(path string) (map[string]appv1.ResourceOverride, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	overrides := map[string]appv1.ResourceOverride{}
	for key, value := range cm.Data {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		field, groupKind, ok := strings.Cut(strings.TrimPrefix(key, prefix), ".")
		if !ok {
			continue
		}
		cut := strings.LastIndex(groupKind, "_")
		if cut < 0 {
			return nil, fmt.Errorf("%s: no <group>_<kind> in the key", key)
		}
		name := groupKind[:cut] + "/" + groupKind[cut+1:]
		override := overrides[name]
		switch field {
		case "health":
			override.HealthLua = value
		case "actions":
			override.Actions = value
		case "useOpenLibs":
			override.UseOpenLibs = value == "true"
		default:
			continue
		}
		overrides[name] = override
	}
	if len(overrides) == 0 {
		return nil, fmt.Errorf("%s: no %s* keys in data", path, prefix)
	}
	return overrides, nil
}

func handle(overrides map[string]appv1.ResourceOverride, r request) result {
	obj := &unstructured.Unstructured{Object: r.Object}
	vm := lua.VM{ResourceOverrides: overrides}
	fail := func(err error) result { return result{Error: err.Error()} }
	switch r.Op {
	case "health":
		// What the application controller calls for every resource.
		health, err := lua.ResourceHealthOverrides(overrides).GetResourceHealth(obj)
		if err != nil {
			return fail(err)
		}
		if health == nil {
			return fail(fmt.Errorf("no health check for %s", lua.GetConfigMapKey(obj.GroupVersionKind())))
		}
		message := health.Message
		return result{Status: string(health.Status), Message: &message}
	case "discovery":
		// What the API server calls to list a resource's actions.
		scripts, err := vm.GetResourceActionDiscovery(obj)
		if err != nil {
			return fail(err)
		}
		actions, err := vm.ExecuteResourceActionDiscovery(obj, scripts)
		if err != nil {
			return fail(err)
		}
		out := make([]discovered, 0, len(actions))
		for _, a := range actions {
			out = append(out, discovered{Name: a.Name, Disabled: a.Disabled})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return result{Actions: out}
	case "action":
		// What the API server calls to run an action (before it patches the resource).
		definition, err := vm.GetResourceAction(obj, r.Action)
		if err != nil {
			return fail(err)
		}
		resources, err := vm.ExecuteResourceAction(obj, definition.ActionLua, nil)
		if err != nil {
			return fail(err)
		}
		out := make([]impacted, 0, len(resources))
		for _, res := range resources {
			out = append(out, impacted{Operation: string(res.K8SOperation), Object: res.UnstructuredObj.Object})
		}
		return result{Objects: out}
	default:
		return fail(fmt.Errorf("unknown op %q (health, discovery or action)", r.Op))
	}
}
