"""Train with PyTorch Lightning: python train_pl.py --config configs/mnist.yaml --gpu 1,2 --name test"""

import sys

from torchx.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "train_pl.py", "torchx.fit"))
