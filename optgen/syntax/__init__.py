"""The language's syntax: the lark grammar (`grammars/opt.lark`), the parser and the frozen AST."""
