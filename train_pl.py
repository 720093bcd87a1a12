"""Train with PyTorch Lightning: python train_pl.py --config configs/mnist.yaml --gpu 1,2 --name test"""

import sys

from torchx.cli import main


def train(args, run):
    from torchx.fit import train as fit  # imported after parsing: a bad command line fails fast

    return fit(args, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "train_pl.py", train))
