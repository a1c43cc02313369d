"""The Keras fine-tuning baseline for `mobilenet train DIR --fine-tune-at N` (issue 15).

The recipe of the Keras guide "Transfer learning & fine-tuning" (and the TF tutorial "Transfer
learning with a pretrained ConvNet", which uses MobileNetV2 and fine_tune_at = 100), adapted to
the shared 5-class flowers split at 224x224 and to the defaults of `mobilenet train`
(Sources/MobileNetTransfer/Training.swift, `TrainingSettings`):

  data    keras.utils.image_dataset_from_directory (tf.image.resize bilinear to 224x224, no
          crop: the same as our default preprocessing), batch 32, labels sorted by folder
          name, training set reshuffled every epoch (seed), validation not shuffled.
  model   inputs (float 0..255, NHWC) → [augmentation] → mobilenet_v2.preprocess_input
          (x / 127.5 - 1) → MobileNetV2 base (include_top=False, the shared dequantized
          no_top weights, called with training=False) → GlobalAveragePooling2D → Dropout(0.2)
          → Dense(classes) logits; SparseCategoricalCrossentropy(from_logits=True).
  phase 1 base frozen; Adam(1e-3); up to 20 epochs, EarlyStopping(val_loss, patience 3,
          restore_best_weights=True).
  phase 2 base.trainable = True, then the first `fine_tune_at` (100) layers of the base frozen
          again (Keras's meaning: `base.layers[:100]`, the InputLayer is layers[0]); recompiled
          with the phase-1 optimizer kind at learning rate / 10; up to 20 more epochs with the
          same early stopping; starts from the best phase-1 weights.

Where this differs from the guide, to match ours:
  - Phase 1 runs WITHOUT augmentation by default: `mobilenet train` fits the head on cached
    embeddings (no augmentation unless --augment). `--augment-phase1` applies it as the guide
    does. Phase 2 uses RandomFlip("horizontal") + RandomRotation(0.2) (fill reflect, bilinear),
    applied on the fly in the tf.data pipeline (the guide's Keras 3 form:
    `train_ds.map(lambda x, y: (data_augmentation(x), y))`); `--no-augment-phase2` turns it off.
    The guide uses RandomRotation(0.1); the TF tutorial 0.2.
  - Optimizer Adam (ours) for both phases; the TF tutorial uses RMSprop. `--optimizer`, and
    `--fine-tune-optimizer` for phase 2 alone (`mobilenet train` defaults to RMSprop there).
  - Epochs: ours (20 max, patience 3, both phases); the guide runs fixed epoch counts.
  - Phase 1 without augmentation fits the head on the base's pooled outputs computed once
    (frozen base in inference mode: the same numbers model.fit on the images computes every
    epoch), reshuffled every epoch, batch 32. `--head-on-images` runs it on the images.

BatchNorm (`--bn`):
  inference     after unfreezing, every BatchNormalization layer of the base gets
                trainable=False. In Keras 3 that means the layer always runs in inference mode
                (moving mean/variance used and not updated) AND its gamma/beta stay fixed. This
                is what the guide intends ("keep BN in inference mode"); ours keeps the moving
                statistics frozen too but does train gamma/beta of unfrozen layers.
  keras-default the guide's code unmodified. Because of keras-team/keras#20285, `fit` calls the
                base with training=True, overriding the construction-time training=False, so
                the unfrozen BN layers use batch statistics and update the moving ones. With
                the shared weights (whose moving statistics are not real activation
                statistics) this is expected to collapse.

Throughput of phase 2: training images / wall time of the training steps of epochs 2..n
(epoch 1 includes tf.function graph building and is left out; validation time is excluded and
reported separately). Peak RSS: resource.getrusage(RUSAGE_SELF).ru_maxrss of the whole process
(both phases; Linux reports KiB).

Run:  nice -n 5 /work/main/.venv-bench/bin/python scripts/bench/keras_finetune_baseline.py \
          --bn inference --json docs/keras-finetune-baseline-inference.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

T0 = time.perf_counter()
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch's training steps (begin → last train batch) and of the whole epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self._begin = 0.0
        self._last_batch = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        self.train_seconds.append(self._last_batch - self._begin)
        self.epoch_seconds.append(end - self._begin)


def make_optimizer(name: str, lr: float, momentum: float):
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=momentum)
    raise SystemExit(f"unknown optimizer {name!r}")


def run_phase(model, train, val, epochs, patience, images):
    timer = EpochTimer()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    t = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=epochs, callbacks=[stop, timer], verbose=2)
    fit_seconds = time.perf_counter() - t
    loss, acc = model.evaluate(val, verbose=0)
    steady = timer.train_seconds[1:]
    record = {
        "epochs_run": len(history.history["loss"]),
        "best_epoch": int(np.argmin(history.history["val_loss"])) + 1,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "train_step_seconds_per_epoch": timer.train_seconds,
        "epoch_seconds_with_validation": timer.epoch_seconds,
        "fit_seconds": fit_seconds,
        "val_loss": float(loss),
        "val_accuracy": float(acc),
        "train_images_per_second": (images * len(steady) / sum(steady)) if steady else None,
        "train_images_per_second_note": "training images / training-step wall time of epochs 2..n "
                                        "(epoch 1 builds the graph; validation excluded)",
    }
    return record


def main() -> None:
    here = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(here.parent / "shared/data/flowers"),
                   help="folder with train/ and val/ class folders")
    p.add_argument("--weights", default=str(here.parent / "shared/data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5"))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20, help="phase 1 maximum epochs (ours: 20)")
    p.add_argument("--fine-tune-epochs", type=int, default=20, help="phase 2 maximum epochs")
    p.add_argument("--patience", type=int, default=3, help="early stopping patience, both phases (ours: 3)")
    p.add_argument("--optimizer", choices=["adam", "rmsprop", "sgd"], default="adam")
    p.add_argument("--fine-tune-optimizer", choices=["adam", "rmsprop", "sgd"], default=None,
                   help="phase 2 (default: --optimizer; ours defaults to rmsprop)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="phase 1 (ours: Adam 1e-3)")
    p.add_argument("--fine-tune-learning-rate", type=float, default=None, help="phase 2 (default: learning rate / 10)")
    p.add_argument("--fine-tune-at", type=int, default=100, help="base.layers[:N] stay frozen (guide: 100)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--rotation", type=float, default=0.2, help="RandomRotation factor (fraction of 2π); 0: flips only")
    p.add_argument("--augment-phase1", action="store_true", help="augment in phase 1 too (the guide does)")
    p.add_argument("--no-augment-phase2", action="store_true")
    p.add_argument("--head-on-images", action="store_true",
                   help="run phase 1 as model.fit on the images (default without augmentation: on the base "
                        "outputs computed once, the same computation)")
    p.add_argument("--bn", choices=["inference", "keras-default"], default="inference")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    ft_lr = args.fine_tune_learning_rate if args.fine_tune_learning_rate is not None else args.learning_rate / 10

    keras.utils.set_random_seed(args.seed)
    size = (args.size, args.size)
    data = Path(args.data)
    train = keras.utils.image_dataset_from_directory(data / "train", image_size=size, batch_size=args.batch_size,
                                                     shuffle=True, seed=args.seed, interpolation="bilinear")
    val = keras.utils.image_dataset_from_directory(data / "val", image_size=size, batch_size=args.batch_size,
                                                   shuffle=False, interpolation="bilinear")
    classes = train.class_names
    n_train = sum(len(files) for files in [list((data / "train" / c).iterdir()) for c in classes])
    augmentation_layers = [keras.layers.RandomFlip("horizontal", seed=args.seed)]
    if args.rotation > 0:  # --rotation 0: flips only (ours without --fine-tune-rotation)
        augmentation_layers.append(keras.layers.RandomRotation(args.rotation, fill_mode="reflect",
                                                               interpolation="bilinear", seed=args.seed + 1))
    augmentation = keras.Sequential(augmentation_layers, name="augmentation")
    augmented = train.map(lambda x, y: (augmentation(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    train_p1 = (augmented if args.augment_phase1 else train).prefetch(tf.data.AUTOTUNE)
    train_p2 = (train if args.no_augment_phase2 else augmented).prefetch(tf.data.AUTOTUNE)
    val = val.prefetch(tf.data.AUTOTUNE)

    base = keras.applications.MobileNetV2(input_shape=size + (3,), include_top=False, weights=args.weights)
    base.trainable = False
    inputs = keras.Input(shape=size + (3,))
    x = keras.applications.mobilenet_v2.preprocess_input(inputs)
    x = base(x, training=False)
    x_pooled = keras.layers.GlobalAveragePooling2D()(x)
    dropout = keras.layers.Dropout(args.dropout)
    dense = keras.layers.Dense(len(classes))
    outputs = dense(dropout(x_pooled))
    model = keras.Model(inputs, outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    phase1_on_features = not (args.augment_phase1 or args.head_on_images)
    if phase1_on_features:
        # The frozen base runs in inference mode and nothing is augmented, so its pooled output
        # is a fixed function of each image: fitting the head on it once computed is the same
        # computation as model.fit on the images (as ours runs phase 1 on cached embeddings),
        # minus 20 forward passes of the base. The head layers are shared with `model`.
        t = time.perf_counter()
        features = keras.Model(inputs, x_pooled)
        def embed(ds):
            return ds.map(lambda images, labels: (features(images, training=False), labels))
        train_f = embed(train).unbatch().cache()
        val_f = embed(val).unbatch().cache()
        n = sum(1 for _ in train_f)  # fills the cache
        sum(1 for _ in val_f)
        embed_seconds = time.perf_counter() - t
        head_in = keras.Input(shape=(x_pooled.shape[-1],))
        head = keras.Model(head_in, dense(dropout(head_in)))
        head.compile(optimizer=make_optimizer(args.optimizer, args.learning_rate, args.momentum), loss=loss,
                     metrics=["accuracy"])
        print(f"phase 1: head only on {n} cached base outputs ({embed_seconds:.0f}s to compute)", flush=True)
        train_h = train_f.shuffle(n, seed=args.seed, reshuffle_each_iteration=True).batch(args.batch_size)
        phase1 = run_phase(head, train_h, val_f.batch(args.batch_size), args.epochs, args.patience, n_train)
        phase1["embedding_seconds"] = embed_seconds
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
        full_loss, full_acc = model.evaluate(val, verbose=0)
        phase1["val_accuracy_full_model"] = float(full_acc)
        print(f"phase 1: val_accuracy={phase1['val_accuracy']:.4f} (full model on images: {full_acc:.4f})", flush=True)
    else:
        model.compile(optimizer=make_optimizer(args.optimizer, args.learning_rate, args.momentum), loss=loss,
                      metrics=["accuracy"])
        print(f"phase 1: head only, {len(model.trainable_weights)} trainable tensors, on images", flush=True)
        phase1 = run_phase(model, train_p1, val, args.epochs, args.patience, n_train)
        print(f"phase 1: val_accuracy={phase1['val_accuracy']:.4f}", flush=True)
    phase1["on_cached_base_outputs"] = phase1_on_features

    if not 0 <= args.fine_tune_at <= len(base.layers):
        raise SystemExit(f"--fine-tune-at {args.fine_tune_at}: the base has {len(base.layers)} layers")
    base.trainable = True
    for layer in base.layers[:args.fine_tune_at]:
        layer.trainable = False
    if args.bn == "inference":
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model.compile(optimizer=make_optimizer(args.fine_tune_optimizer or args.optimizer, ft_lr, args.momentum), loss=loss,
                  metrics=["accuracy"])
    first_trainable = next(l.name for l in base.layers[args.fine_tune_at:] if l.trainable_weights)
    print(f"phase 2: fine-tuning from base layer {args.fine_tune_at} ({first_trainable}), "
          f"{len(model.trainable_weights)} trainable tensors, bn={args.bn}", flush=True)
    phase2 = run_phase(model, train_p2, val, args.fine_tune_epochs, args.patience, n_train)
    print(f"phase 2: val_accuracy={phase2['val_accuracy']:.4f} "
          f"throughput={phase2['train_images_per_second']} img/s", flush=True)

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "script": "scripts/bench/keras_finetune_baseline.py",
        "settings": {**vars(args), "fine_tune_learning_rate": ft_lr, "first_trainable_layer": first_trainable,
                     "base_layers": len(base.layers), "train_images": n_train},
        "classes": classes,
        "head_phase": phase1,
        "fine_tune_phase": phase2,
        "head_val_accuracy": phase1["val_accuracy"],
        "fine_tuned_val_accuracy": phase2["val_accuracy"],
        "fine_tune_images_per_second": phase2["train_images_per_second"],
        "peak_rss_mib": rss_kib / 1024,
        "total_seconds": time.perf_counter() - T0,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()},
        "versions": {"python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__},
    }
    print(json.dumps({k: result[k] for k in ("head_val_accuracy", "fine_tuned_val_accuracy",
                                             "fine_tune_images_per_second", "peak_rss_mib", "total_seconds")}))
    if args.json:
        out = Path(args.json)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(out)


if __name__ == "__main__":
    main()
