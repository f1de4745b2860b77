# SPDX-License-Identifier: Apache-2.0
"""Parse the C prototypes of an MPI implementation's mpi.h (after `cc -E -P`).

Contract: parse() returns every PMPI_ function declared in the header as a Decl. Anything shaped like
a PMPI_ declaration that cannot be parsed raises ParseError naming it: the generator never skips silently.
"""
import re


class ParseError(Exception):
    pass


class Param:
    def __init__(self, text, index):
        self.text = text.strip()
        t = self.text
        self.array = False
        m = re.match(r'^(.*?)(\w+)\s*((?:\[[^\]]*\]\s*)+)$', t)
        if m:  # "int ranges[][3]", "const MPI_Datatype types[]"
            self.base = m.group(1).strip()
            self.name = m.group(2)
            dims = re.findall(r'\[([^\]]*)\]', m.group(3))
            self.array = True
            self.inner_dims = dims[1:]
        else:
            m = re.match(r'^(.*[\s\*])(\w+)$', t)
            if not m or m.group(2) in ('int', 'char', 'void', 'double', 'const'):
                if t == 'void':
                    raise ParseError('void param')
                # unnamed parameter: synthesize a name
                self.base = t
                self.name = 'arg%d' % index
            else:
                self.base = m.group(1).strip()
                self.name = m.group(2)
            self.inner_dims = []
        self.const = bool(re.match(r'^const\b', self.base))
        core = re.sub(r'\bconst\b', '', self.base).strip()
        self.stars = core.count('*')
        self.core = core.replace('*', '').strip()
        if not re.match(r'^(struct\s+)?\w+(\s+\w+)*$', self.core):
            raise ParseError('cannot parse parameter type %r' % t)

    def decl(self, name=None):
        """The parameter as it must appear in a definition (arrays kept as arrays)."""
        n = name or self.name
        if self.array:
            return '%s %s[]%s' % (self.base, n, ''.join('[%s]' % d for d in self.inner_dims))
        return '%s %s' % (self.base, n) if not self.base.endswith('*') else '%s%s' % (self.base, n)


class Decl:
    def __init__(self, ret, name, params):
        self.ret = ret
        self.name = name          # PMPI_ name
        self.api = name[1:]       # MPI_ name
        self.params = params

    def __repr__(self):
        return '%s %s(%s)' % (self.ret, self.name, ', '.join(p.text for p in self.params))


_ATTR = re.compile(r'__attribute__\s*\(\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\)')


def parse(text):
    text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)   # string literals may hold ';' or parens
    text = _ATTR.sub(' ', text)
    decls = {}
    # statements end at ';' or '{' ... we only care about top-level prototypes
    for stmt in re.split(r'[;{}]', text):
        if 'PMPI_' not in stmt:
            continue
        s = ' '.join(_ATTR.sub(' ', stmt).split())
        s = re.sub(r'\b(extern|__extension__)\b', ' ', s)
        s = ' '.join(s.split())
        m = re.match(r'^(?:.*\s)?(\w[\w\s\*]*?)\s*\b(PMPI_\w+)\s*\((.*)\)\s*$', s)
        if not m:
            if re.search(r'\bPMPI_\w+\s*\(', s) and not s.startswith('typedef'):
                raise ParseError('cannot parse declaration: %s' % s)
            continue
        ret, name, plist = m.group(1).strip(), m.group(2), m.group(3).strip()
        if '(' in plist:
            raise ParseError('function-pointer parameter spelled inline in %s: %s' % (name, s))
        if plist == 'void' or plist == '':
            params = []
        else:
            parts = [p.strip() for p in plist.split(',')]
            variadic = parts[-1] == '...'
            if variadic:
                parts = parts[:-1]
            params = [Param(p, i) for i, p in enumerate(parts)]
        d = Decl(ret, name, params)
        d.variadic = plist.endswith('...')
        decls[name] = d
    if not decls:
        raise ParseError('no PMPI_ declarations found')
    return decls
