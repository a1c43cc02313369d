"""The Keras transfer-learning workflow on the shared flowers split, as the baseline for
`mobilenet train` (issue 5).

Follows the Keras guide "Transfer learning & fine-tuning" / the TF tutorial "Transfer learning
with a pretrained ConvNet": image_dataset_from_directory (bilinear tf.image.resize to 224x224,
batch 32, labels sorted by folder name) → frozen MobileNetV2 base (include_top=False, the
shared dequantized no_top weights, called with training=False) → GlobalAveragePooling2D →
Dropout(0.2) → Dense(classes, softmax); Adam(1e-3), sparse categorical cross-entropy,
EarlyStopping(val_loss, patience, restore_best_weights=True). The same defaults as
`mobilenet train` (epochs 20, patience 3, batch 32, seed 42).

Run:  /opt/tfenv/bin/python scripts/transfer/keras_flowers_baseline.py [--shared ../shared] [--json out.json]
Prints the per-epoch history, the best validation accuracy/loss, and wall times (total, fit).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

T0 = time.perf_counter()
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main() -> None:
    here = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(here.parent / "shared"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    shared = Path(args.shared)
    keras.utils.set_random_seed(args.seed)
    size = (224, 224)
    train = keras.utils.image_dataset_from_directory(shared / "data/flowers/train", image_size=size, batch_size=32,
                                                     shuffle=True, seed=args.seed, interpolation="bilinear")
    val = keras.utils.image_dataset_from_directory(shared / "data/flowers/val", image_size=size, batch_size=32,
                                                   shuffle=False, interpolation="bilinear")
    classes = train.class_names
    base = keras.applications.MobileNetV2(input_shape=size + (3,), include_top=False,
                                          weights=str(shared / "data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5"))
    base.trainable = False
    inputs = keras.Input(shape=size + (3,))
    x = keras.applications.mobilenet_v2.preprocess_input(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True)
    t_fit = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[stop], verbose=2)
    fit_seconds = time.perf_counter() - t_fit
    loss, acc = model.evaluate(val, verbose=0)
    total = time.perf_counter() - T0
    result = {
        "classes": classes,
        "epochs_run": len(history.history["loss"]),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "val_loss": float(loss), "val_accuracy": float(acc),
        "fit_seconds": fit_seconds, "total_seconds": total,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
    }
    print(f"keras: val_accuracy={acc:.4f} val_loss={loss:.4f} epochs={result['epochs_run']} "
          f"fit={fit_seconds:.1f}s total={total:.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
