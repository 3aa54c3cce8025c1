"""Video search on real clips with LFW as distractors: is each named person found in their clip?

Indexes the clips of ``--videos`` (see its manifest.csv and the data README) and every LFW photo
into one embedded index (an index that already holds LFW skips those files as unchanged: pass it
with ``--data-dir``), then queries with each named person's photos, restricted to video results.

Prints per clip and person: how many query photos find the clip first among video results (rank 1
= no track of a clip *without* that person ranks above the clip's first track; other clips showing
the same person may), the worst such rank, the time ranges matched (score at or above the same-person threshold) against the
clip's length; track documents per minute of video; the crowd clip's tracks that match a named
person above the threshold; and processing speed as a multiple of real time: per clip in one
process with one torch thread, and per resolution as the throughput of one such worker process per
core kept busy as on a folder of many videos of that resolution: each clip is submitted once per
process (models loaded beforehand; median of ``--runs``). One torch
thread per process because MTCNN's hundreds of tiny per-box resizes each wake torch's thread pool:
with two threads on two busy cores they cost ten times more than the convolutions gain.

Usage: python bench/video_search.py --videos ../shared/data/videos --lfw ../shared/data/lfw
       [--refs ../shared/data/video_refs] [--data-dir DIR] [--runs 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from ingest_throughput import cpu_name  # noqa: E402

from ingest.local import analyse_segment_in_worker, index_locally, worker_pool  # noqa: E402
from ingest.sources import collect_photos  # noqa: E402
from search_engine.calibration import POSSIBLE, SAME_PERSON  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.indexing import source_name  # noqa: E402
from search_engine.media_types import is_image_path  # noqa: E402
from search_engine.service import SearchService  # noqa: E402
from search_engine.types import SearchFilters  # noqa: E402
from search_engine.video import probe, read_frame  # noqa: E402
from search_engine.video_indexing import VideoOptions, analyse_segment, segments  # noqa: E402

#: Who each clip shows and where their query photos are: an LFW folder, a video_refs folder, or
#: ("frame", seconds) for a person in neither (a frame of the clip itself, as the data README says).
CLIPS = {
    "biden_whitehouse.mp4": {"Joseph_Biden": "lfw"},
    "trump_speech.mp4": {"Donald_Trump": "lfw"},
    "debate2020_biden_trump.mp4": {"Joseph_Biden": "lfw", "Donald_Trump": "lfw"},
    "hdtf_bob_menendez.mp4": {"Bob_Menendez": "lfw"},
    "hdtf_katie_hill.mp4": {"Katie_Hill": ("frame", 1.0)},
    "obama_weekly_address.mp4": {"Barack_Obama": "refs"},
    "crowd_royal_opera_house.mp4": {},
}
CROWD = "crowd_royal_opera_house.mp4"


def query_photos(person: str, where, args, scratch: Path, clip: Path) -> list[Path]:
    if where == "lfw":
        return sorted((args.lfw / person).glob("*.jpg"))
    if where == "refs":
        return sorted(p for p in (args.refs / person).iterdir() if is_image_path(p))
    _, seconds = where
    frame = read_frame(clip, round(seconds * probe(clip).fps))
    path = scratch / f"{person}_frame.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return [path]


def clock(seconds: float) -> str:
    return f"{seconds:.1f}"


def throughput(settings: Settings, options: VideoOptions, clips: list[Path], runs: int) -> dict[str, float]:
    """Seconds of video analysed per second of wall time, per resolution, with one worker process
    per core kept busy as on a folder of many videos: every clip of that resolution is submitted
    once per worker, cut into segments as ``facesearch index`` cuts them, all at once."""
    workers = os.cpu_count() or 1
    groups: dict[str, list] = {}
    for clip in clips:
        info = probe(clip)
        groups.setdefault(f"{info.width}x{info.height}", []).append((clip, info))
    speeds = {}
    with worker_pool(settings, workers) as pool:
        for future in [pool.submit(analyse_segment_in_worker, clips[0], 0.0, 1.0, options) for _ in range(workers)]:
            future.result()
        for resolution, members in groups.items():
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                futures = [
                    pool.submit(analyse_segment_in_worker, clip, start, end, options)
                    for clip, info in members
                    for start, end in segments(info, options.segment_seconds)
                    for _ in range(workers)
                ]
                for future in futures:
                    future.result()
                timings.append(time.perf_counter() - started)
            video_seconds = workers * sum(info.duration for _, info in members)
            speeds[resolution] = video_seconds / statistics.median(timings)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, required=True)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument(
        "--refs", type=Path, help="folder of reference photos per person (default: VIDEOS/../video_refs)"
    )
    parser.add_argument("--data-dir", type=Path, help="index directory to (re)use; default: a fresh temporary one")
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    args.refs = args.refs or args.videos.parent / "video_refs"
    scratch = Path(tempfile.mkdtemp(prefix="facesearch-video-bench-"))
    data_dir = args.data_dir or scratch / "data"
    settings = Settings.from_env().replace(embedder=args.embedder, data_dir=data_dir, es_url=None, torch_threads=1)

    clips = [args.videos / name for name in CLIPS]
    lfw = collect_photos([args.lfw], person_from_folder=True).photos
    started = time.perf_counter()
    summary, index = index_locally(settings, lfw, videos=clips)
    print(f"indexed {summary.files} files ({summary.skipped} unchanged) in {time.perf_counter() - started:.0f} s")
    for source, reason in summary.failures:
        print(f"  failed: {source}: {reason}")
    index.close()

    service = SearchService.from_settings(settings)
    judged = service.verdicts()
    if judged is None:
        parser.error(
            f"{args.embedder} is not calibrated: run facesearch calibrate on this index or set "
            "FACESEARCH_SAME_PERSON_THRESHOLD"
        )
    threshold = round(judged.same_person, 4)
    video_only = SearchFilters(media_type="video")
    print(
        f"\nper clip and person (video results only; matched = score >= {threshold}, the product's same-person "
        f"threshold for {judged.gallery_size:,} faces at target FPIR {judged.target_fpir:.0%})"
    )
    print(
        "| clip | person | query photos | clip ranked 1st | worst rank | time ranges matched (s) | clip length (s) "
        "| best score in the clip per photo (S same person, P possible) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    named_vectors = []
    for clip in clips:
        length = probe(clip).duration
        for person, where in CLIPS[clip.name].items():
            ranks, spans, best_scores = [], set(), []
            for photo in query_photos(person, where, args, scratch, clip):
                faces = service.faces_in(cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB))
                if not faces:
                    continue
                vector = max(faces, key=lambda f: f.detection.box.area).embedding
                named_vectors.append(vector)
                hits = service.index.search(vector, k=200, filters=video_only)
                showing = {name for name, people in CLIPS.items() if person in people}
                wrong_ahead = 0
                for hit in hits:
                    if hit.video == clip.name:
                        ranks.append(wrong_ahead + 1)
                        break
                    wrong_ahead += hit.video not in showing
                else:
                    ranks.append(10**6)
                spans |= {(h.start, h.end) for h in hits if h.video == clip.name and h.score >= threshold}
                in_clip = max((h.score for h in hits if h.video == clip.name), default=None)
                if in_clip is not None:
                    mark = {SAME_PERSON: " S", POSSIBLE: " P"}.get(judged.of(in_clip), "")
                    best_scores.append(f"{in_clip:.2f}{mark}")
            first = sum(r == 1 for r in ranks)
            worst = max(ranks) if ranks and max(ranks) < 10**6 else "not found"
            ranges = ", ".join(f"{clock(s)}-{clock(e)}" for s, e in sorted(spans)) or "none"
            print(
                f"| {clip.name} | {person} | {len(ranks)} | {first}/{len(ranks)} | {worst} | {ranges} | {clock(length)} "
                f"| {', '.join(best_scores)} |"
            )

    crowd = service.index.faces_of_source(source_name(args.videos / CROWD))
    named = np.stack(named_vectors)
    above = sum(float((named @ face.embedding).max()) >= threshold for face in crowd)
    best = max(float((named @ face.embedding).max()) for face in crowd) if crowd else float("nan")
    print(
        f"\ncrowd clip: {len(crowd)} tracks; {above} match a named person's photo at >= {threshold} (highest {best:.3f})"
    )

    print(
        f"\nspeed: one process, one torch thread, median of {args.runs} runs; machine: {cpu_name()}, {os.cpu_count()} cores"
    )
    print(
        "| clip | resolution | length (s) | tracks | documents per minute | frames analysed / sampled | x real time |"
    )
    print("|---|---|---|---|---|---|---|")
    options = VideoOptions.from_settings(settings.video, service.index)
    for clip in clips:
        info = probe(clip)
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            # The clips are shorter than a segment: one segment is the whole clip.
            analysis = analyse_segment(service.pipeline, clip, 0.0, None, options)
            timings.append(time.perf_counter() - started)
        tracks = len(analysis.records)
        print(
            f"| {clip.name} | {info.width}x{info.height} | {info.duration:.1f} | {tracks} | "
            f"{tracks / info.duration * 60:.0f} | {analysis.analysed} / {analysis.sampled} | "
            f"{info.duration / statistics.median(timings):.1f} |"
        )
    service.close()

    print(f"\nthroughput: {os.cpu_count()} worker processes x 1 torch thread, each clip submitted once per process")
    print("| resolution | x real time |\n|---|---|")
    for resolution, speed in throughput(settings, options, clips, args.runs).items():
        print(f"| {resolution} | {speed:.1f} |")


if __name__ == "__main__":
    main()
