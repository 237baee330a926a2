"""Front ends: the text parser (Lark) and the embedded decorator front end, both producing the AST."""
