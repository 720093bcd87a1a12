import sys

from torchx.cli import tool_main

sys.exit(tool_main())
