package main

import "io"

func importOpenDKIM(args []string, stdout, stderr io.Writer) int { return exitConfig }
