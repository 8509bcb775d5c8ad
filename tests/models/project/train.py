"""A tiny training script run by `mlflow run` in the tests: logs its params and a metric."""

import argparse

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--alpha", type=float, required=True)
parser.add_argument("--epochs", type=int, required=True)
args = parser.parse_args()

with mlflow.start_run():
    mlflow.log_param("alpha", args.alpha)
    mlflow.log_param("epochs", args.epochs)
    for epoch in range(args.epochs):
        mlflow.log_metric("loss", args.alpha / (epoch + 1), step=epoch)
