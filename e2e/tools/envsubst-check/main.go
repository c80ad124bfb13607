package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/fluxcd/pkg/envsubst"
)

type c struct {
	Vars   map[string]string `json:"vars"`
	Input  string            `json:"input"`
	Strict bool              `json:"strict"`
}

func main() {
	var cases []c
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	for _, k := range cases {
		out, err := envsubst.Eval(k.Input, func(s string) (string, bool) {
			if k.Strict {
				v, ok := k.Vars[s]
				return v, ok
			}
			return k.Vars[s], true
		})
		e := ""
		if err != nil {
			e = err.Error()
			out = ""
		}
		b, _ := json.Marshal([]string{out, e})
		fmt.Println(string(b))
	}
}
