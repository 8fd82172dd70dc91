"""What the known models expect and produce, for the METADATA section of `.spnn` files.

    meta = info_for("hand_landmark_full.tflite")   # or info_for(graph): by graph.metadata["name"]
    graph.metadata.update(meta)

The facts come from the models themselves and from MediaPipe's own graphs as shipped in
npm `@mediapipe/hands` (the `ImageToTensorCalculator`, `SsdAnchorsCalculator` and
`TensorsToDetectionsCalculator` options inside its wasm bundle): both the hand landmark
and the palm detection models take RGB scaled to [0, 1] (`output_tensor_float_range
{min: 0 max: 1}`), letterboxed to keep the aspect ratio. Shapes here are pysparse's (NCHW).
"""
from __future__ import annotations

import os

HAND_LANDMARK_NAMES = [
    "WRIST",
    "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP",
    "INDEX_FINGER_MCP", "INDEX_FINGER_PIP", "INDEX_FINGER_DIP", "INDEX_FINGER_TIP",
    "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP", "MIDDLE_FINGER_TIP",
    "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP",
    "PINKY_MCP", "PINKY_PIP", "PINKY_DIP", "PINKY_TIP",
]

# Bones drawn between landmarks (the same list as MediaPipe's HAND_CONNECTIONS).
HAND_CONNECTIONS = [
    [0, 1], [1, 2], [2, 3], [3, 4],
    [0, 5], [5, 6], [6, 7], [7, 8],
    [5, 9], [9, 10], [10, 11], [11, 12],
    [9, 13], [13, 14], [14, 15], [15, 16],
    [13, 17], [0, 17], [17, 18], [18, 19], [19, 20],
]


def _hand_landmark(name: str) -> dict:
    return {
        "name": name,
        "task": "hand_landmark",
        "input": {"name": "input_1", "shape": [1, 3, 224, 224], "layout": "NCHW", "color": "RGB",
                  "range": [0.0, 1.0]},
        "outputs": [
            {"name": "Identity", "shape": [1, 63],
             "meaning": "21 landmarks (x, y, z): x, y in input pixels (0..224); z is depth relative to "
                        "the wrist, in roughly the same scale as x"},
            {"name": "Identity_1", "shape": [1, 1],
             "meaning": "hand presence probability (the model applies the sigmoid); MediaPipe keeps the "
                        "hand above 0.5"},
            {"name": "Identity_2", "shape": [1, 1],
             "meaning": "handedness: probability of a right hand (sigmoid applied; MediaPipe's labels "
                        "assume a mirrored, selfie-view image)"},
            {"name": "Identity_3", "shape": [1, 63],
             "meaning": "21 world landmarks (x, y, z) in metres, origin at the hand's approximate "
                        "geometric centre"},
        ],
        "landmarks": {"names": list(HAND_LANDMARK_NAMES), "connections": [list(c) for c in HAND_CONNECTIONS]},
    }


def _palm_detection(name: str) -> dict:
    return {
        "name": name,
        "task": "palm_detection",
        "input": {"name": "input_1", "shape": [1, 3, 192, 192], "layout": "NCHW", "color": "RGB",
                  "range": [0.0, 1.0]},
        "outputs": [
            {"name": "Identity", "shape": [1, 2016, 18],
             "meaning": "per anchor: box (x_center, y_center, w, h) then 7 keypoints (x, y), in input "
                        "pixels; centres and keypoints are offsets from the anchor centre "
                        "(decoded x = anchor_x + raw_x / 192, w = raw_w / 192)"},
            {"name": "Identity_1", "shape": [1, 2016, 1],
             "meaning": "per anchor: palm score logit (apply the sigmoid; clip to +-100 first)"},
        ],
        # MediaPipe's decoding (SsdAnchorsCalculator, TensorsToDetectionsCalculator, NMS).
        "anchors": {"input_size": [192, 192], "num_layers": 4, "strides": [8, 16, 16, 16],
                    "min_scale": 0.1484375, "max_scale": 0.75, "anchor_offset": [0.5, 0.5],
                    "aspect_ratios": [1.0], "fixed_anchor_size": True},
        "detections": {"num_boxes": 2016, "num_coords": 18, "box_coord_offset": 0,
                       "keypoint_coord_offset": 4, "num_keypoints": 7, "scale": [192.0, 192.0, 192.0, 192.0],
                       "sigmoid_score": True, "score_clipping_thresh": 100.0, "min_score_thresh": 0.5,
                       "nms_min_suppression_threshold": 0.3},
    }


KNOWN = {
    "hand_landmark_full": _hand_landmark,
    "hand_landmark_lite": _hand_landmark,
    "palm_detection_full": _palm_detection,
    "palm_detection_lite": _palm_detection,
}


def model_key(source) -> str | None:
    """The known model a file name, path or Graph refers to (None if unknown)."""
    name = source.metadata.get("name", "") if hasattr(source, "metadata") else os.fspath(source)
    base = os.path.splitext(os.path.basename(str(name)))[0]
    # Tolerate suffixes the tool chain adds ("hand_landmark_full_sparse80", ...).
    for key in sorted(KNOWN, key=len, reverse=True):
        if base == key or base.startswith(key + "_") or base.startswith(key + "."):
            return key
    return None


def info_for(source) -> dict:
    """Metadata for a known model (by file name, path, or a Graph's metadata name), to merge
    into `.spnn` METADATA; {} for a model pysparse knows nothing about."""
    key = model_key(source)
    return KNOWN[key](key) if key else {}
