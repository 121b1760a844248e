"""Creative rendering: ad layouts, text fitting, inventory states, provenance labels, the studio
(cut-out mattes, scenes, composition). numpy, Pillow and OpenCV only; no serving code, no torch."""
