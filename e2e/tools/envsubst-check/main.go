// envsubst-check: Flux's postBuild substitution as a JSON filter, for tests/envsubst_flux.rs.
//
// Reads [{vars, input, strict}] or [{vars, object, strict}] on stdin and prints one
// [output, error] line per case. With `input`, the text goes through envsubst.Eval. With
// `object`, the object goes the way kustomize-controller sends each built resource: marshalled
// to YAML (sigs.k8s.io/yaml JSONToYAML, as kustomize's Resource.AsYAML), substituted, and read
// back (YAMLToJSON); the output is that JSON.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/fluxcd/pkg/envsubst"
	"sigs.k8s.io/yaml"
)

type testCase struct {
	Vars   map[string]string `json:"vars"`
	Input  string            `json:"input"`
	Object json.RawMessage   `json:"object"`
	Strict bool              `json:"strict"`
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	for _, c := range cases {
		mapper := func(s string) (string, bool) {
			if c.Strict {
				v, ok := c.Vars[s]
				return v, ok
			}
			return c.Vars[s], true
		}
		out, err := run(c, mapper)
		e := ""
		if err != nil {
			e = err.Error()
			out = ""
		}
		b, _ := json.Marshal([]string{out, e})
		fmt.Println(string(b))
	}
}

func run(c testCase, mapper func(string) (string, bool)) (string, error) {
	if c.Object == nil {
		return envsubst.Eval(c.Input, mapper)
	}
	text, err := yaml.JSONToYAML(c.Object)
	if err != nil {
		return "", err
	}
	out, err := envsubst.Eval(string(text), mapper)
	if err != nil {
		return "", err
	}
	j, err := yaml.YAMLToJSON([]byte(out))
	return string(j), err
}
