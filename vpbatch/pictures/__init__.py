"""Pictures of built days: the heatmap, the one-page report, the palette the viewer shares."""
