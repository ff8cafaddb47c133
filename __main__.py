"""devprod Pulumi program: validate the stack config, then build what it declares."""

from components.program import main

main()
