import sys

from epsinas_onnx.cli import main

sys.exit(main())
