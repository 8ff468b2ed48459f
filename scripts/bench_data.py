"""The reference side of `bocb bench data --resolution N`: timm's training
transform (`timm.data.create_transform(is_training=True)` with the recipe's
crop, flip, RandAugment and filter, as bocb streams it) over
`torchvision.datasets.ImageFolder(DIR/train)` through a `DataLoader` with the
same batch and worker count. Random erasing and Mixup/CutMix are left out:
bocb does them on the device, after the pipeline.

bocb runs it as `python -c SCRIPT JSON` and reads one JSON line: the images
timed and their images/s, or `{"missing": [MODULE]}` / `{"error": MESSAGE}`.
"""

import json
import resource
import sys
import time


def cpu_seconds(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main():
    args = json.loads(sys.argv[1])
    try:
        import torch
        import timm.data
        import torchvision
    except ImportError as e:
        print(json.dumps({"missing": [e.name]}))
        return
    # One thread per process, as bocb's workers each decode on one core.
    torch.set_num_threads(1)
    transform = timm.data.create_transform(
        input_size=args["side"],
        is_training=True,
        scale=tuple(args["scale"]),
        ratio=tuple(args["ratio"]),
        hflip=args["hflip"],
        vflip=0.0,
        color_jitter=None,
        auto_augment=args["auto_augment"],
        interpolation=args["interpolation"],
        re_prob=0.0,
    )
    folder = torchvision.datasets.ImageFolder(args["train"], transform=transform)
    batch, batches = args["batch"], args["batches"]
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(0))
    subset = torch.utils.data.Subset(folder, order[: batch * batches].tolist())
    loader = torch.utils.data.DataLoader(
        subset, batch_size=batch, num_workers=args["workers"], drop_last=True
    )
    # CPU time of this process and its reaped workers over the whole pass.
    cpu_before = cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN)
    # The clock starts at the first batch, as bocb's does: worker start-up
    # is not the pipeline's rate.
    started, images = None, 0
    for inputs, _ in loader:
        if started is None:
            started = time.perf_counter()
        else:
            images += inputs.shape[0]
    seconds = time.perf_counter() - started
    # The exhausted loader has joined its workers: they count as children.
    cpu = cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before
    print(
        json.dumps(
            {
                "images": images,
                "images_per_sec": images / seconds if images else 0.0,
                "images_per_cpu_sec": batch * batches / cpu,
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - reported to bocb, which names the python
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
