package devstack

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Template is the part of a SAM template the local stack builds from.
type Template struct {
	Parameters map[string]struct {
		Default any `yaml:"Default"`
	} `yaml:"Parameters"`
	Globals struct {
		Function map[string]yaml.Node `yaml:"Function"`
	} `yaml:"Globals"`
	Resources map[string]*Resource `yaml:"Resources"`
}

// Resource is one resource; Properties stay as YAML so intrinsic functions
// can be resolved once the physical ids are known.
type Resource struct {
	Type       string    `yaml:"Type"`
	Properties yaml.Node `yaml:"Properties"`
}

// LoadTemplate reads a SAM template.
func LoadTemplate(path string) (*Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading template: %w", err)
	}
	var t Template
	if err := yaml.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("parsing template %s: %w", path, err)
	}
	return &t, nil
}

// OfType returns the logical ids of resources of a type, sorted.
func (t *Template) OfType(typ string) []string {
	var ids []string
	for id, r := range t.Resources {
		if r.Type == typ {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Resolver evaluates the intrinsic functions the template uses (Ref, GetAtt,
// Sub) against the local stack's values.
type Resolver struct {
	Params map[string]string            // parameter values
	Refs   map[string]string            // logical id → what Ref returns
	Attrs  map[string]map[string]string // logical id → attribute → value
	Pseudo map[string]string            // AWS::Region and friends
}

// Value converts a YAML node to plain Go values, resolving intrinsics.
func (r *Resolver) Value(n *yaml.Node) (any, error) {
	if n == nil || n.Kind == 0 {
		return nil, nil
	}
	switch n.Tag {
	case "!Ref":
		return r.ref(n.Value)
	case "!GetAtt":
		return r.getAtt(n.Value)
	case "!Sub":
		return r.sub(n.Value)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		return r.Value(n.Content[0])
	case yaml.AliasNode:
		return r.Value(n.Alias)
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, err
		}
		return v, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := r.Value(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		if len(n.Content) == 2 {
			switch n.Content[0].Value {
			case "Ref":
				return r.ref(n.Content[1].Value)
			case "Fn::GetAtt":
				if n.Content[1].Kind == yaml.SequenceNode && len(n.Content[1].Content) == 2 {
					return r.getAtt(n.Content[1].Content[0].Value + "." + n.Content[1].Content[1].Value)
				}
				return r.getAtt(n.Content[1].Value)
			case "Fn::Sub":
				return r.sub(n.Content[1].Value)
			}
		}
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := r.Value(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			out[n.Content[i].Value] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}

// String resolves a node that must be a string.
func (r *Resolver) String(n *yaml.Node) (string, error) {
	v, err := r.Value(n)
	if err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case nil:
		return "", nil
	default:
		return fmt.Sprint(v), nil
	}
}

func (r *Resolver) ref(name string) (string, error) {
	if v, ok := r.Pseudo[name]; ok {
		return v, nil
	}
	if v, ok := r.Params[name]; ok {
		return v, nil
	}
	if v, ok := r.Refs[name]; ok {
		return v, nil
	}
	return "", fmt.Errorf("Ref %s: not a parameter or a resource the local stack made", name)
}

func (r *Resolver) getAtt(path string) (string, error) {
	id, attr, ok := strings.Cut(path, ".")
	if !ok {
		return "", fmt.Errorf("GetAtt %s: want Resource.Attribute", path)
	}
	if v, ok := r.Attrs[id][attr]; ok {
		return v, nil
	}
	return "", fmt.Errorf("GetAtt %s: unknown to the local stack", path)
}

var subVar = regexp.MustCompile(`\$\{([^}!]+)\}`)

func (r *Resolver) sub(s string) (string, error) {
	var firstErr error
	out := subVar.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		var v string
		var err error
		if strings.Contains(name, ".") {
			v, err = r.getAtt(name)
		} else {
			v, err = r.ref(name)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return v
	})
	// ${!x} is a literal ${x}: IAM policy variables in a Sub.
	return strings.ReplaceAll(out, "${!", "${"), firstErr
}

// get returns the node at a key of a mapping node, or nil.
func get(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// keys returns the keys of a mapping node in order.
func keys(n *yaml.Node) []string {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var ks []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		ks = append(ks, n.Content[i].Value)
	}
	return ks
}

// FunctionByDir returns the logical id of the function whose code is
// functions/<dir>/.
func (t *Template) FunctionByDir(dir string) (string, error) {
	r := &Resolver{}
	for _, id := range t.OfType("AWS::Serverless::Function") {
		uri, _ := r.String(get(&t.Resources[id].Properties, "CodeUri"))
		if strings.Trim(uri, "/") == "functions/"+dir {
			return id, nil
		}
	}
	return "", fmt.Errorf("no function in functions/%s", dir)
}
