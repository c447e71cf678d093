package provision

import (
	"slices"

	"lab/formats"
)

// FormatRules are the binfmt rules of configured formats (a lab file's), after the
// built-in ones: lab-NAME, type M with the format's offset, magic and mask, or type E for
// an extension format, all handed to lab's interpreter with RuleFlags as the built-ins are.
func FormatRules(table []formats.Format) []Rule {
	var out []Rule
	for _, f := range table {
		out = append(out, Rule{
			Name: formats.RuleName(f.Name), Offset: f.Offset, Magic: slices.Clone(f.Magic), Mask: slices.Clone(f.Mask),
			Extension: f.Extension, Interpreter: InterpreterPath, Flags: RuleFlags,
		})
	}
	return out
}
