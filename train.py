"""Train without Lightning's Trainer: python train.py --config configs/mnist.yaml --gpu 0 --name test"""

import sys

from torchx.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "train.py", "torchx.loop"))
